"""The model repository: which model versions are served right now.

The request path calls `resolve()`, which reads an immutable snapshot
(`dict[name, ServedModel]`). Loads, unloads and polls are the control plane:
serialised by one lock, slow work in threads, and each ends by swapping in a
new snapshot with one assignment. A version that is replaced or removed keeps
serving the requests that already hold it and is retired when they finish."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mlserve.errors import ConfigError, MlserveError, ModelNotFound, ModelUnavailable
from mlserve.runtime.model_config import ModelConfig
from mlserve.runtime.model_loader import load_version
from mlserve.runtime.model_version import ModelVersion
from mlserve.runtime.repository_layout import DiskFingerprint, RepositoryLayout

log = logging.getLogger(__name__)


class ModelState(enum.Enum):
    READY = "READY"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One row of the repository index (version "" = the model as a whole)."""

    name: str
    version: str
    state: ModelState
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ServedModel:
    """The ready versions of one model; `latest` answers version-less
    requests: the newest, or the `default` a version chooser named."""

    name: str
    versions: dict[int, ModelVersion]
    default: int | None = None

    @property
    def latest(self) -> ModelVersion | None:
        if self.default in self.versions:
            return self.versions[self.default]
        return self.versions[max(self.versions)] if self.versions else None


@dataclass(frozen=True, slots=True)
class VersionChoice:
    """The versions of a model to serve, and the one version-less requests get."""

    versions: tuple[int, ...]
    default: int


# Decides which versions of a model to load when something other than its
# version policy does: a rollout serving stable and canary side by side, or
# the version a finished rollout left serving. Called with (name, config,
# versions on disk, versions serving now); None leaves it to the policy. It
# may raise ConfigError (a bad `rollout:` section): the model is then
# unavailable with that reason, as for any other config error.
VersionChooser = Callable[[str, ModelConfig, list[int], tuple[int, ...]], VersionChoice | None]
StateListener = Callable[[IndexEntry], None]


class ModelRepository:
    """Loads, serves, reloads and unloads the models of one repository folder."""

    def __init__(self, layout: RepositoryLayout) -> None:
        self.layout = layout
        self.choose_versions: VersionChooser | None = None  # set by the composition root
        self._served: dict[str, ServedModel] = {}
        # Each model's latest ready version, by name: the request path's lookup
        # for version-less requests, kept in step with _served by _publish.
        self._latest: dict[str, ModelVersion] = {}
        self._index: dict[tuple[str, str], IndexEntry] = {}
        self._wanted: set[str] = set()
        self._disk: dict[str, DiskFingerprint] = {}
        self._fingerprints: dict[tuple[str, int], tuple[object, ...]] = {}
        self._lock = asyncio.Lock()
        self._listeners: list[StateListener] = []
        self._retiring: set[asyncio.Task[None]] = set()

    # -- request path ---------------------------------------------------------

    def resolve(self, name: str, version: str = "") -> ModelVersion:
        """The version to serve; raises ModelNotFound or ModelUnavailable."""
        if not version:
            latest = self._latest.get(name)
            if latest is not None:
                return latest
        served = self._served.get(name)
        if served is not None:
            model = (
                served.latest
                if not version
                else (served.versions.get(int(version)) if version.isdigit() else None)
            )
            if model is not None:
                return model
            if version:
                raise ModelNotFound(
                    f"model '{name}' has no ready version '{version}'; ready versions are "
                    f"{sorted(served.versions)}"
                )
        entry = self._index.get((name, version)) or self._index.get((name, ""))
        if entry is not None and entry.state is not ModelState.READY:
            detail = f": {entry.reason}" if entry.reason else ""
            what = f"model '{name}'" + (f" version {version}" if version else "")
            raise ModelUnavailable(f"{what} is {entry.state.value.lower()}{detail}")
        what = f"model '{name}'" + (f" version '{version}'" if version else "")
        raise ModelNotFound(f"{what} is not loaded in this server")

    def served(self) -> dict[str, ServedModel]:
        return self._served

    def _publish(self, served: dict[str, ServedModel]) -> None:
        """Serve this snapshot of ready versions from now on."""
        self._served = served
        self._latest = {
            name: latest for name, m in served.items() if (latest := m.latest) is not None
        }

    # -- queries --------------------------------------------------------------

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        entries = sorted(self._index.values(), key=lambda e: (e.name, e.version))
        if ready_only:
            return [e for e in entries if e.state is ModelState.READY]
        return entries

    def all_ready(self) -> bool:
        """Every model that should be loaded has at least one ready version."""
        return all(name in self._served and self._served[name].versions for name in self._wanted)

    def add_listener(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    # -- control plane --------------------------------------------------------

    async def load(self, name: str) -> None:
        """Load or reload `name`; raises if it ends with no ready version."""
        async with self._lock:
            await self._load_locked(name)
        if name not in self._served:
            entry = self._index.get((name, ""))
            reasons = [e.reason for e in self._index.values() if e.name == name and e.reason]
            raise ModelUnavailable(
                f"failed to load model '{name}': "
                + ("; ".join(reasons) or (entry.reason if entry else "unknown"))
            )

    async def load_many(self, names: Iterable[str]) -> None:
        """Load each model, logging (not raising) failures: the rest keep loading."""
        for name in names:
            try:
                await self.load(name)
            except MlserveError as exc:
                log.error("%s", exc.message)

    async def unload(self, name: str) -> None:
        async with self._lock:
            if name not in self._served:
                self.layout.model_dir(name)  # unknown or unsafe names raise here
            self._wanted.discard(name)
            self._disk.pop(name, None)
            served = self._served.get(name)
            if served is not None:
                for version in served.versions:
                    self._set(IndexEntry(name, str(version), ModelState.UNLOADING))
                    self._fingerprints.pop((name, version), None)
                snapshot = dict(self._served)
                del snapshot[name]
                self._publish(snapshot)
                for version, model in served.versions.items():
                    self._retire(
                        model, IndexEntry(name, str(version), ModelState.UNAVAILABLE, "unloaded")
                    )
            self._set(IndexEntry(name, "", ModelState.UNAVAILABLE, "unloaded"))

    async def poll_once(self) -> None:
        """Reload models whose folder changed, load new ones, unload removed ones."""
        on_disk = set(self.layout.model_names())
        for name in sorted(on_disk):
            try:
                fingerprint = self.layout.fingerprint(self.layout.model_dir(name))
            except (MlserveError, OSError):
                continue
            if self._disk.get(name) != fingerprint:
                async with self._lock:
                    await self._load_locked(name)
        for name in sorted(self._wanted - on_disk):
            await self.unload(name)

    async def close(self) -> None:
        for served in self._served.values():
            for model in served.versions.values():
                model.close()
        self._publish({})

    async def _load_locked(self, name: str) -> None:
        model_dir = self.layout.model_dir(name)
        self._wanted.add(name)
        self._disk[name] = self.layout.fingerprint(model_dir)
        self._set(IndexEntry(name, "", ModelState.LOADING))
        try:
            config = self.layout.read_config(name, model_dir)
            on_disk = self.layout.versions(model_dir)
            current = self._served.get(name)
            serving = tuple(sorted(current.versions)) if current else ()
            choice = self.choose_versions and self.choose_versions(name, config, on_disk, serving)
            if choice:
                wanted = [v for v in choice.versions if v in on_disk]
                default: int | None = choice.default
            else:
                wanted, default = config.version_policy.select(on_disk), None
            if not wanted:
                raise ConfigError(
                    f"{name}/config.yaml: version_policy",
                    f"selects no version out of those on disk {on_disk}",
                )
        except (ConfigError, OSError) as exc:
            reason = exc.message if isinstance(exc, ConfigError) else str(exc)
            self._set(IndexEntry(name, "", ModelState.UNAVAILABLE, reason))
            log.error("model %s: %s", name, reason)
            return
        versions: dict[int, ModelVersion] = {}
        for version in wanted:
            old = current.versions.get(version) if current else None
            loaded = await self._load_version(name, model_dir, config, version, old)
            if loaded is not None:
                versions[version] = loaded
        if not versions:
            reasons = "; ".join(
                f"version {v}: {self._index[(name, str(v))].reason}"
                for v in wanted
                if (name, str(v)) in self._index and self._index[(name, str(v))].reason
            )
            if current is not None and current.versions:
                # A failed reload keeps what already serves (as Triton does).
                kept = sorted(current.versions)
                self._set(
                    IndexEntry(
                        name,
                        "",
                        ModelState.READY,
                        f"reload failed ({reasons}); still serving {kept}",
                    )
                )
            else:
                self._set(
                    IndexEntry(name, "", ModelState.UNAVAILABLE, f"no version loaded; {reasons}")
                )
            return
        snapshot = dict(self._served)
        snapshot[name] = ServedModel(name, versions, default)
        self._publish(snapshot)
        self._set(IndexEntry(name, "", ModelState.READY))
        if current is not None:
            for version, model in current.versions.items():
                if version not in versions:
                    self._set(IndexEntry(name, str(version), ModelState.UNLOADING))
                    self._fingerprints.pop((name, version), None)
                    self._retire(
                        model, IndexEntry(name, str(version), ModelState.UNAVAILABLE, "unloaded")
                    )
                elif versions[version] is not model:
                    self._retire(model, None)

    async def _load_version(
        self,
        name: str,
        model_dir: Path,
        config: ModelConfig,
        version: int,
        old: ModelVersion | None,
    ) -> ModelVersion | None:
        """Load one version unless unchanged; on failure keep `old` serving."""
        try:
            model_file = self.layout.model_file(
                name, model_dir, version, config.default_model_filename
            )
            stat = model_file.stat()
            key = (stat.st_mtime_ns, stat.st_size, stat.st_ino, config)
            if old is not None and self._fingerprints.get((name, version)) == key:
                return old
            self._set(IndexEntry(name, str(version), ModelState.LOADING))
            model = await asyncio.to_thread(
                load_version, config, version=version, model_dir=model_dir, model_file=model_file
            )
        except (ConfigError, OSError) as exc:
            reason = exc.message if isinstance(exc, ConfigError) else str(exc)
            log.error("model %s version %d: %s", name, version, reason)
            if old is not None:
                self._set(
                    IndexEntry(
                        name,
                        str(version),
                        ModelState.READY,
                        f"reload failed, still serving the previous load: {reason}",
                    )
                )
                return old
            self._set(IndexEntry(name, str(version), ModelState.UNAVAILABLE, reason))
            return None
        self._fingerprints[(name, version)] = key
        self._set(IndexEntry(name, str(version), ModelState.READY))
        log.info("model %s version %d ready (sha256 %s)", name, version, model.sha256[:12])
        return model

    def _retire(self, model: ModelVersion, final: IndexEntry | None) -> None:
        async def retire() -> None:
            await model.retire()
            if final is not None:
                current = self._index.get((final.name, final.version))
                if current is not None and current.state is ModelState.UNLOADING:
                    self._set(final)

        task = asyncio.get_running_loop().create_task(retire())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _set(self, entry: IndexEntry) -> None:
        self._index[(entry.name, entry.version)] = entry
        for listener in self._listeners:
            listener(entry)
