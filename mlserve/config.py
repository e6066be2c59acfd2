"""The server's configuration: one typed tree, loaded and validated once.

A YAML file (`--config`) holds the same settings as the command-line flags,
with the flag names as keys (`grpc_port: 8001`); flags given on the command
line override the file. Defaults and flag names follow Triton's."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from mlserve.config_section import Section
from mlserve.errors import ConfigError
from mlserve.runtime.access import Restriction, parse_restriction

DEFAULT_MAX_INPUT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Server certificate, and the CA that client certificates must chain to."""

    cert: Path
    key: Path
    root_cert: Path | None = None
    mutual: bool = False


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    enabled: bool = True
    address: str = "0.0.0.0"
    port: int = 0
    tls: TlsConfig | None = None
    restricted: tuple[Restriction, ...] = ()
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES


@dataclass(frozen=True, slots=True)
class GrpcEndpointConfig(EndpointConfig):
    """The gRPC endpoint: which transport serves it, and server keepalive PINGs
    (gRPC's defaults)."""

    impl: str = "native"
    keepalive_time_s: float = 7200.0
    keepalive_timeout_s: float = 20.0
    # Native transport: a client silent this long in the middle of a request
    # message has its connection closed (0: no limit).
    read_timeout_s: float = 60.0


GRPC_IMPLS = ("native", "grpcio")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    model_repository: Path
    http: EndpointConfig = field(default_factory=lambda: EndpointConfig(port=8000))
    grpc: GrpcEndpointConfig = field(default_factory=lambda: GrpcEndpointConfig(port=8001))
    metrics: EndpointConfig = field(default_factory=lambda: EndpointConfig(port=8002))
    model_control_mode: str = "none"
    load_models: tuple[str, ...] = ()
    repository_poll_secs: float = 15.0
    strict_readiness: bool = True
    exit_timeout_secs: float = 30.0
    # A request begun over HTTP must keep arriving: no gap between reads, and
    # no wait for the end of its headers, longer than this (0: no limit), or
    # it is answered 408 and its connection closed (nginx's client header and
    # body timeouts are 60 s).
    http_read_timeout_secs: float = 60.0
    log_level: str = "info"
    workers: int = 0  # 0 = auto (the default): supervisor.auto_workers decides
    # Set by the supervisor for its worker processes only:
    worker_socket: str | None = None  # unix socket serving this worker's metrics
    worker_peers: tuple[str, ...] = ()  # every worker's socket, for statistics
    reuse_port: bool = False
    # Rollouts: where their state lives (SQLite), and the bearer token their
    # admin API asks for (None: none asked).
    state_dir: Path | None = None
    admin_token: str | None = None

    @property
    def rollout_state_dir(self) -> Path:
        """--state-dir, by default beside the repository."""
        if self.state_dir is not None:
            return self.state_dir
        repository = self.model_repository.resolve()
        return repository.parent / f".{repository.name}.mlserve-state"


def _tls(section: Section, prefix: str) -> TlsConfig | None:
    if not section.boolean(f"{prefix}_use_ssl", False):
        for unused in ("server_cert", "server_key", "root_cert", "use_ssl_mutual"):
            section.raw(f"{prefix}_{unused}", None)
        return None
    cert = section.optional_string(f"{prefix}_server_cert")
    key = section.optional_string(f"{prefix}_server_key")
    if not cert or not key:
        raise ConfigError(
            f"{prefix}_use_ssl", f"needs {prefix}_server_cert and {prefix}_server_key"
        )
    root = section.optional_string(f"{prefix}_root_cert")
    mutual = section.boolean(f"{prefix}_use_ssl_mutual", False)
    if mutual and not root:
        raise ConfigError(f"{prefix}_use_ssl_mutual", f"needs {prefix}_root_cert to verify clients")
    for label, value in (
        (f"{prefix}_server_cert", cert),
        (f"{prefix}_server_key", key),
        (f"{prefix}_root_cert", root),
    ):
        if value and not Path(value).is_file():
            raise ConfigError(label, f"file {value!r} does not exist")
    return TlsConfig(Path(cert), Path(key), Path(root) if root else None, mutual)


def _restrictions(section: Section, key: str) -> tuple[Restriction, ...]:
    specs = section.raw(key, [])
    if isinstance(specs, str):
        specs = [specs]
    if not isinstance(specs, list):
        raise ConfigError(section.child_path(key), "must be a string or a list of strings")
    out: list[Restriction] = []
    for spec in specs:
        for rule in parse_restriction(str(spec), section.child_path(key)):
            if any(r.group == rule.group for r in out):
                raise ConfigError(
                    section.child_path(key), f"protocol group {rule.group!r} is restricted twice"
                )
            out.append(rule)
    return tuple(out)


def _endpoint(
    section: Section,
    name: str,
    default_port: int,
    *,
    restricted_key: str | None,
    tls: bool,
    max_input_key: str | None,
) -> EndpointConfig:
    return EndpointConfig(
        enabled=section.boolean(f"allow_{name}", True),
        address=section.string(f"{name}_address", "0.0.0.0"),
        port=section.integer(f"{name}_port", default_port, minimum=0, maximum=65535),
        tls=_tls(section, name) if tls else None,
        restricted=_restrictions(section, restricted_key) if restricted_key else (),
        max_input_bytes=section.integer(max_input_key, DEFAULT_MAX_INPUT_BYTES, minimum=1024)
        if max_input_key
        else DEFAULT_MAX_INPUT_BYTES,
    )


def _grpc_options(section: Section, endpoint: EndpointConfig) -> GrpcEndpointConfig:
    """Triton's keepalive flags (milliseconds), and which gRPC transport serves."""
    return GrpcEndpointConfig(
        **{f.name: getattr(endpoint, f.name) for f in fields(EndpointConfig)},
        impl=section.choice("grpc_impl", GRPC_IMPLS, "native"),
        keepalive_time_s=section.integer("grpc_keepalive_time", 7_200_000, minimum=1) / 1000,
        keepalive_timeout_s=section.integer("grpc_keepalive_timeout", 20_000, minimum=1) / 1000,
        read_timeout_s=section.number("grpc_read_timeout_secs", 60.0),
    )


def server_config_from_mapping(data: dict[str, Any]) -> ServerConfig:
    """Validate a flat settings mapping (file keys or flags) into a ServerConfig."""
    section = Section(data)
    repository = section.string("model_repository")
    if not Path(repository).is_dir():
        raise ConfigError("model_repository", f"{repository!r} is not a directory")
    mode = section.choice("model_control_mode", ("none", "poll", "explicit"), "none")
    load = section.raw("load_model", [])
    if isinstance(load, str):
        load = [load]
    if not isinstance(load, list) or not all(isinstance(n, str) for n in load):
        raise ConfigError("load_model", "must be a model name or a list of them")
    if load and mode != "explicit":
        raise ConfigError("load_model", "is only meaningful with model_control_mode: explicit")
    config = ServerConfig(
        model_repository=Path(repository),
        http=_endpoint(
            section,
            "http",
            8000,
            restricted_key="http_restricted_api",
            tls=True,
            max_input_key="http_max_input_size",
        ),
        grpc=_grpc_options(
            section,
            _endpoint(
                section,
                "grpc",
                8001,
                restricted_key="grpc_restricted_protocol",
                tls=True,
                max_input_key="grpc_max_input_size",
            ),
        ),
        metrics=_endpoint(
            section, "metrics", 8002, restricted_key=None, tls=False, max_input_key=None
        ),
        model_control_mode=mode,
        load_models=tuple(load),
        repository_poll_secs=section.number("repository_poll_secs", 15.0, minimum=0.05),
        strict_readiness=section.boolean("strict_readiness", True),
        exit_timeout_secs=section.number("exit_timeout_secs", 30.0),
        http_read_timeout_secs=section.number("http_read_timeout_secs", 60.0),
        log_level=section.choice("log_level", ("debug", "info", "warning", "error"), "info"),
        workers=_workers(section),
        worker_socket=section.optional_string("worker_socket"),
        worker_peers=tuple(section.items("worker_peers", lambda v, p: str(v))),
        reuse_port=section.boolean("reuse_port", False),
        state_dir=Path(state_dir) if (state_dir := section.optional_string("state_dir")) else None,
        admin_token=section.optional_string("admin_token") or None,
    )
    section.reject_unknown()
    return config


def _workers(section: Section) -> int:
    value = section.raw("workers", "auto")
    if value == "auto":
        return 0
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str) and value.isdigit():
        number = int(value)
    if number is None or number < 1:
        raise ConfigError("workers", f"must be a positive integer or 'auto', got {value!r}")
    return number


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML settings file into a flat mapping (validated by the caller)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "must hold a mapping of settings")
    return data
