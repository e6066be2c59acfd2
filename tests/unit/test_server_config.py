"""Server settings: a YAML file and flags, validated once with key paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlserve.cli.main import build_parser
from mlserve.config import load_config_file, server_config_from_mapping
from mlserve.errors import ConfigError
from mlserve.runtime.access import AccessPolicy, parse_restriction


def test_defaults_follow_triton(tmp_path: Path) -> None:
    config = server_config_from_mapping({"model_repository": str(tmp_path)})
    assert (config.http.port, config.grpc.port, config.metrics.port) == (8000, 8001, 8002)
    assert config.model_control_mode == "none"
    assert config.repository_poll_secs == 15.0
    assert config.exit_timeout_secs == 30.0
    assert config.http_read_timeout_secs == 60.0
    assert config.grpc.read_timeout_s == 60.0
    assert config.http.max_input_bytes == 64 * 1024 * 1024


def test_file_then_flags(tmp_path: Path) -> None:
    settings = tmp_path / "mlserve.yaml"
    settings.write_text(
        f"model_repository: {tmp_path}\ngrpc_port: 9001\nhttp_port: 9000\n"
        "model_control_mode: explicit\nload_model: [a, b]\n"
    )
    flags = ["--http-port", "0", "--http-read-timeout-secs", "2.5", "--grpc-read-timeout-secs", "0"]
    args = build_parser().parse_args(["serve", *flags])
    merged = {
        **load_config_file(settings),
        **{k: v for k, v in vars(args).items() if k != "command"},
    }
    config = server_config_from_mapping(merged)
    assert config.grpc.port == 9001  # from the file
    assert config.http.port == 0  # the flag wins
    assert config.load_models == ("a", "b")
    assert config.http_read_timeout_secs == 2.5
    assert config.grpc.read_timeout_s == 0.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "model_repository: is required"),
        ({"model_repository": "/no/such/dir"}, "is not a directory"),
        ({"grpc_port": 70000}, "grpc_port: must be <= 65535"),
        ({"model_control_mode": "auto"}, "model_control_mode: must be one of none, poll, explicit"),
        ({"load_model": ["a"]}, "load_model: is only meaningful with model_control_mode: explicit"),
        ({"grpc_use_ssl": True}, "grpc_use_ssl: needs grpc_server_cert and grpc_server_key"),
        (
            {"http_use_ssl": True, "http_server_cert": "/x", "http_server_key": "/y"},
            "http_server_cert: file '/x' does not exist",
        ),
        ({"http_restricted_api": "model-repository"}, "must look like"),
        ({"grpc_restricted_protocol": ["everything:k=v"]}, "unknown protocol group 'everything'"),
        ({"grcp_port": 1}, "grcp_port: unknown key"),
        ({"http_read_timeout_secs": -1}, "http_read_timeout_secs: must be >= 0.0"),
    ],
)
def test_invalid_settings(tmp_path: Path, settings: dict, message: str) -> None:
    base = {"model_repository": str(tmp_path)} if "model_repository" not in settings else {}
    if settings == {}:
        base = {}
    with pytest.raises(ConfigError) as info:
        server_config_from_mapping({**base, **settings})
    assert message in info.value.message


def test_restrictions_check_the_header() -> None:
    policy = AccessPolicy(parse_restriction("model-repository,statistics:Admin-Key=s3cret", "x"))
    assert policy.header_for("statistics") == "admin-key"
    assert policy.header_for("inference") is None
    policy.check("model-repository", "s3cret")
    policy.check("inference", None)
    with pytest.raises(Exception, match="send header 'admin-key'"):
        policy.check("statistics", "wrong")


def test_auto_workers_one_per_cpu_only_for_small_cpu_models(tmp_path: Path) -> None:
    import os

    from mlserve import examples
    from mlserve.supervisor import auto_workers

    examples.write_model(tmp_path, "m", examples.identity_model())
    config = server_config_from_mapping({"model_repository": str(tmp_path)})
    assert config.workers == 0  # auto is the default
    cpus = len(os.sched_getaffinity(0))
    assert auto_workers(config)[0] == cpus
    for model_config, reason in (
        ("device: cuda:0\n", "runs on cuda:0"),
        ("instance_count: 2\n", "more than one instance"),
        ("session: {intra_op_threads: 2}\n", "intra-op thread"),
    ):
        (tmp_path / "m" / "config.yaml").write_text(model_config)
        count, why = auto_workers(config)
        assert count == 1
        assert reason in why or cpus == 1, why


def test_auto_workers_one_for_large_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from mlserve import examples, supervisor

    examples.write_model(tmp_path, "m", examples.identity_model())
    config = server_config_from_mapping({"model_repository": str(tmp_path)})
    size = (tmp_path / "m" / "1" / "model.onnx").stat().st_size
    monkeypatch.setattr(supervisor, "SMALL_MODELS_BYTES", size - 1)
    count, why = supervisor.auto_workers(config)
    assert count == 1
    assert "MiB" in why or len(os.sched_getaffinity(0)) == 1, why
