"""Names and links that would leave the model repository are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlserve import examples
from mlserve.errors import ConfigError, InvalidRequest, ModelNotFound
from mlserve.runtime.repository_layout import RepositoryLayout, check_model_name


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "/abs", ".hidden", "-opt", "", "a..b"])
def test_unsafe_names_refused(name: str) -> None:
    with pytest.raises(InvalidRequest, match="not allowed"):
        check_model_name(name)


def test_links_outside_the_repository_are_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    outside = tmp_path / "outside"
    examples.write_model(outside, "evil", examples.identity_model())
    repo.mkdir()
    (repo / "evil").symlink_to(outside / "evil")
    examples.write_model(repo, "good", examples.identity_model())
    (repo / "good" / "2").mkdir()
    (repo / "good" / "2" / "model.onnx").symlink_to(outside / "evil" / "1" / "model.onnx")
    layout = RepositoryLayout(repo)
    with pytest.raises(InvalidRequest, match="links outside"):
        layout.model_dir("evil")
    good = layout.model_dir("good")
    assert layout.versions(good) == [1, 2]
    assert layout.model_file("good", good, 1, "model.onnx").is_file()
    with pytest.raises(ConfigError, match="links outside"):
        layout.model_file("good", good, 2, "model.onnx")
    with pytest.raises(ModelNotFound):
        layout.model_dir("missing")


def test_version_folders_must_be_plain_numbers(tmp_path: Path) -> None:
    for folder in ("1", "02", "x", "3"):
        (tmp_path / "m" / folder).mkdir(parents=True)
    assert RepositoryLayout(tmp_path).versions(tmp_path / "m") == [1, 3]
