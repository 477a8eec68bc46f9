"""What makes a result trustworthy: data that round-trips through the remote, and training that
gives the same model bytes every time."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from conftest import run


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def locked_md5(project: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return next(out["md5"] for out in lock["stages"][stage]["outs"] if out["path"] == path)


def test_a_clone_pulls_the_data_back(generated, tmp_path):
    project = generated("default")
    raw = project / "data" / "raw" / "breast_cancer.csv"
    clone = tmp_path / "clone"
    run("git", "clone", "--quiet", project, clone, cwd=tmp_path)
    assert not (clone / "data" / "raw").exists()

    run("uv", "sync", "--locked", "--quiet", cwd=clone)
    run("uv", "run", "--locked", "dvc", "pull", cwd=clone)

    assert md5(clone / "data" / "raw" / "breast_cancer.csv") == md5(raw)
    assert md5(clone / "models" / "model.joblib") == md5(project / "models" / "model.joblib")
    assert json.loads(run("uv", "run", "dvc", "status", "--json", cwd=clone).stdout) == {}


def test_forced_retraining_is_bit_identical(generated):
    project = generated("default")
    model = project / "models" / "model.joblib"
    recorded = locked_md5(project, "train", "models/model.joblib")
    for _ in range(2):
        run("uv", "run", "--locked", "dvc", "repro", "--force", cwd=project)
        assert md5(model) == recorded
    assert run("git", "status", "--porcelain", cwd=project).stdout == ""
