"""Turning one version folder into a ready `ModelVersion`: verify the file's
sha256, open the onnxruntime session, complete the config from the graph, and
smoke-test it with warmup inferences. Runs in a worker thread (it is slow)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mlserve.errors import ConfigError
from mlserve.runtime.model_config import ModelConfig, complete
from mlserve.runtime.model_version import ModelVersion
from mlserve.runtime.onnx_session import OnnxSession


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_version(
    config: ModelConfig, *, version: int, model_dir: Path, model_file: Path
) -> ModelVersion:
    """Load, check and warm up one version; raises `ConfigError` naming what failed."""
    label = f"{config.name}/{version}"
    digest = sha256_of(model_file)
    expected = config.expected_sha256(version)
    if expected is not None and digest != expected:
        raise ConfigError(
            f"{label}/{model_file.name}",
            f"sha256 is {digest} but config.yaml expects {expected}; refusing to load",
        )
    session = OnnxSession(str(model_file), settings=config.session, device=config.device)
    try:
        completed = complete(config, session.inputs, session.outputs)
    except ConfigError as exc:
        raise ConfigError(f"{config.name}/config.yaml: {exc.path}", exc.reason) from None
    model = ModelVersion(
        config=completed, version=version, session=session, sha256=digest, path=model_file
    )
    try:
        model.warm_up(model_dir)
    except Exception as exc:
        model.close()
        raise ConfigError(f"{label}", f"warmup failed: {exc}") from exc
    return model
