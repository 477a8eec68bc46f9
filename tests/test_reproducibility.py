"""What makes a result trustworthy: data that round-trips through the remote, and training that
gives the same model bytes every time."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from projects import run


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def locked_md5(project: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return next(out["md5"] for out in lock["stages"][stage]["outs"] if out["path"] == path)


def clone_with_data(project: Path, destination: Path) -> Path:
    run("git", "clone", "--quiet", project, destination, cwd=project.parent)
    assert not (destination / "data" / "raw").exists(), "raw data must come from DVC, not git"
    run("uv", "sync", "--locked", "--quiet", cwd=destination)
    run("uv", "run", "--locked", "dvc", "pull", "--quiet", cwd=destination)
    return destination


def test_a_clone_pulls_the_data_back(generated, tmp_path):
    project = generated("default")
    raw = project / "data" / "raw" / "breast_cancer.csv"
    clone = clone_with_data(project, tmp_path / "clone")

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


def enlarged(row: str) -> str:
    *features, target = row.split(",")
    return ",".join([*(f"{float(value) * 1.02:.6g}" for value in features), target])


def test_added_data_flows_through_the_pipeline(generated, tmp_path):
    """The README's 'Add data' steps: a new CSV, `dvc add`, `dvc repro`, and the model changes."""
    clone = clone_with_data(generated("default"), tmp_path / "clone")
    raw = clone / "data" / "raw"
    original = (raw / "breast_cancer.csv").read_text().splitlines()
    # New rows: the first 100 biopsies measured again, 2% larger.
    header, rows = original[0], original[1:101]
    (raw / "march.csv").write_text("\n".join([header, *map(enlarged, rows)]) + "\n")

    run("uv", "run", "--locked", "dvc", "add", "data/raw", cwd=clone)
    result = run("uv", "run", "--locked", "dvc", "repro", cwd=clone)
    assert "Running stage 'prepare'" in result.stdout
    metrics = json.loads((clone / "reports" / "metrics.json").read_text())
    assert metrics["holdout_rows"] == 168  # a quarter of 669 rows
    assert json.loads(run("uv", "run", "dvc", "status", "--json", cwd=clone).stdout) == {}


def test_a_bad_row_stops_the_pipeline_naming_file_row_and_column(generated, tmp_path):
    clone = clone_with_data(generated("default"), tmp_path / "clone")
    raw = clone / "data" / "raw"
    lines = (raw / "breast_cancer.csv").read_text().splitlines()
    columns = lines[0].split(",")
    bad = lines[3].split(",")
    bad[columns.index("mean_radius")] = "-4"
    (raw / "bad.csv").write_text("\n".join([lines[0], lines[1], ",".join(bad)]) + "\n")

    run("uv", "run", "--locked", "dvc", "add", "data/raw", cwd=clone)
    result = run("uv", "run", "--locked", "dvc", "repro", cwd=clone, check=False)
    assert result.returncode != 0
    assert (
        "prepare: invalid raw data: data/raw/bad.csv: line 3: mean_radius: -4.0 is below the "
        "minimum 0.0"
    ) in result.stderr
