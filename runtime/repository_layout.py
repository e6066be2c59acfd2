"""Reading a Triton-style model repository from disk, safely.

Layout: `<root>/<model>/[config.yaml] <version>/<model.onnx>` with numeric
version folders. Every name that comes from a request or from the disk is
checked: no `..`, no separators, and nothing (following links) outside the
root."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlserve.errors import ConfigError, InvalidRequest, ModelNotFound
from mlserve.runtime.model_config import ModelConfig, parse_model_config

_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
CONFIG_FILE = "config.yaml"


def check_model_name(name: str) -> None:
    """Refuse names that are not a single plain path component."""
    if not _MODEL_NAME.match(name) or ".." in name:
        raise InvalidRequest(
            f"model name {name!r} is not allowed: use letters, digits, '_', '-', '.' "
            "(no '..', no '/', not starting with '.' or '-')"
        )


@dataclass(frozen=True, slots=True)
class DiskFingerprint:
    """What poll mode compares to notice that a model folder changed."""

    entries: tuple[tuple[str, int, int], ...]


class RepositoryLayout:
    """The model repository folder and the rules for reading it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def model_names(self) -> list[str]:
        """Model folders under the root (names that pass `check_model_name`)."""
        names = []
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and _MODEL_NAME.match(entry.name) and ".." not in entry.name:
                names.append(entry.name)
        return names

    def model_dir(self, name: str) -> Path:
        """The folder of `name`; refuses anything that leaves the repository."""
        check_model_name(name)
        path = self.root / name
        if not path.is_dir():
            raise ModelNotFound(f"model '{name}' is not in the model repository")
        if not path.resolve().is_relative_to(self.root):
            raise InvalidRequest(f"model '{name}' links outside the model repository; refused")
        return path

    def read_config(self, name: str, model_dir: Path) -> ModelConfig:
        config_path = model_dir / CONFIG_FILE
        data: object = None
        if config_path.exists():
            self._inside(config_path, f"{name}/{CONFIG_FILE}")
            try:
                data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise ConfigError(f"{name}/{CONFIG_FILE}", f"is not valid YAML: {exc}") from None
        try:
            return parse_model_config(data, name=name)
        except ConfigError as exc:
            raise ConfigError(f"{name}/{CONFIG_FILE}: {exc.path}", exc.reason) from None

    def versions(self, model_dir: Path) -> list[int]:
        return sorted(
            int(entry.name)
            for entry in model_dir.iterdir()
            if entry.is_dir() and entry.name.isdigit() and entry.name == str(int(entry.name))
        )

    def model_file(self, name: str, model_dir: Path, version: int, filename: str) -> Path:
        path = model_dir / str(version) / filename
        if not path.is_file():
            raise ConfigError(f"{name}/{version}", f"has no {filename}")
        self._inside(path, f"{name}/{version}/{filename}")
        return path

    def fingerprint(self, model_dir: Path) -> DiskFingerprint:
        entries = []
        for path in sorted(model_dir.rglob("*")):
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((str(path.relative_to(model_dir)), stat.st_mtime_ns, stat.st_size))
        return DiskFingerprint(tuple(entries))

    def _inside(self, path: Path, label: str) -> None:
        if not path.resolve().is_relative_to(self.root):
            raise ConfigError(label, "links outside the model repository; refused")
