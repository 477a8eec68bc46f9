"""Batch scoring in a generated project: every row is scored or rejected with its reason."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from projects import Project, local_registry, run

pytestmark = pytest.mark.parametrize("lived", ["local"], indirect=True)

# (1-based row, column, bad value, how the reason batch scoring gives begins)
SEEDED = [
    (3, "mean_radius", "900.5", "mean_radius: 900.5 is above the maximum "),
    (7, "worst_texture", "abc", "worst_texture: not a finite number: abc"),
    (8, "mean_area", "", "mean_area: missing"),
    (120, "symmetry_error", "-1.5", "symmetry_error: -1.5 is below the minimum 0.0"),
]


def write_input(project: Project, path: Path) -> int:
    """The example's rows without the target, with an id column and the seeded bad values."""
    with (project.path / "data" / "raw" / "breast_cancer.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for row_number, row in enumerate(rows, start=1):
        row.pop("malignant")
        row["patient_id"] = f"p{row_number:04d}"
        for bad_row, column, value, _ in SEEDED:
            if row_number == bad_row:
                row[column] = value
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


TO_PARQUET = """
import sys
import pandas as pd
pd.read_csv(sys.argv[1], dtype=str).to_parquet(sys.argv[2], index=False)
"""

READ_PARQUET = """
import sys
import pandas as pd
print(pd.read_parquet(sys.argv[1]).to_json(orient="records"))
"""


def scored_records(project: Project) -> list[dict]:
    registry = local_registry(project) / project.package / "log"
    records = [json.loads(path.read_text())["body"] for path in sorted(registry.glob("*.json"))]
    return [record for record in records if record["action"] == "scored"]


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_rows_in_equal_rows_scored_plus_rejected(lived, tmp_path, file_format):
    project, _ = lived
    python = project.path / ".venv" / "bin" / "python"
    rows_in = write_input(project, tmp_path / "input.csv")
    source, target = tmp_path / f"input.{file_format}", tmp_path / f"scored.{file_format}"
    if file_format == "parquet":
        run(python, "-c", TO_PARQUET, tmp_path / "input.csv", source, cwd=project.path)

    # Small chunks, so rows and rejects cross chunk boundaries.
    result = project.nox("score", str(source), str(target), "--chunk-rows", "50")
    assert f"scored {rows_in - len(SEEDED)} of {rows_in} rows with version" in result.stdout

    rejects_file = tmp_path / "scored.rejects.csv"
    with rejects_file.open() as handle:
        rejects = list(csv.DictReader(handle))
    assert [int(r["row"]) for r in rejects] == [s[0] for s in SEEDED]
    for reject, (_, _, _, reason) in zip(rejects, SEEDED, strict=True):
        assert reject["reason"].startswith(reason), reject["reason"]
    assert [r["patient_id"] for r in rejects] == [f"p{s[0]:04d}" for s in SEEDED]

    if file_format == "csv":
        with target.open() as handle:
            scored = list(csv.DictReader(handle))
    else:
        scored = json.loads(run(python, "-c", READ_PARQUET, target, cwd=project.path).stdout)
    version = project.serving()
    assert len(scored) + len(rejects) == rows_in
    assert {str(row["model_version"]) for row in scored} == {str(version)}
    assert {str(row["prediction"]) for row in scored} == {"0", "1"}
    rejected_ids = {f"p{s[0]:04d}" for s in SEEDED}
    assert not rejected_ids & {row["patient_id"] for row in scored}

    record = scored_records(project)[-1]
    assert record["details"]["rows_in"] == rows_in
    assert record["details"]["rows_rejected"] == len(SEEDED)
    assert record["details"]["version"] == version
    assert record["details"]["input_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["details"]["output_sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()


def test_an_unusable_input_is_refused_and_nothing_is_written(lived, tmp_path):
    project, _ = lived
    source = tmp_path / "input.csv"
    write_input(project, source)
    lines = source.read_text().splitlines()
    header = lines[0].split(",")
    dropped = header.index("mean_area")
    source.write_text(
        "\n".join(
            ",".join(v for i, v in enumerate(line.split(",")) if i != dropped) for line in lines
        )
        + "\n"
    )
    before = len(scored_records(project))
    refused = project.ops("score", str(source), str(tmp_path / "out.csv"), check=False)
    assert refused.returncode == 2
    assert "missing column(s): mean_area" in refused.stderr
    wrong = project.ops("score", str(source), str(tmp_path / "out.json"), check=False)
    assert "use a .csv or .parquet file, not .json" in wrong.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["input.csv"]
    assert len(scored_records(project)) == before


def test_a_bundle_file_scores_and_the_audit_still_reads(lived, tmp_path):
    project, _ = lived
    source = tmp_path / "input.csv"
    rows_in = write_input(project, source)
    bundle = next((local_registry(project) / project.package / "bundles").glob("*.zip"))
    project.ops("score", str(source), str(tmp_path / "out.csv"), "--bundle", str(bundle))
    details = scored_records(project)[-1]["details"]
    assert details["version"] is None and details["rows_in"] == rows_in
    assert details["bundle_sha256"] == bundle.stem
    assert "scored" in project.ops("audit").stdout
