"""Batch scoring in a generated project: every row is scored or rejected with its reason."""

from __future__ import annotations

import csv
import hashlib
import json
import signal
import subprocess
import time
from collections.abc import Callable
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


# A line past the first chunks of 50 rows: a problem only found while streaming.
LATE = 401


def empty(project: Project, folder: Path) -> Path:
    (folder / "input.csv").write_bytes(b"")
    return folder / "input.csv"


def with_line_changed(project: Project, folder: Path, change: Callable[[bytes], bytes]) -> Path:
    path = folder / "input.csv"
    write_input(project, path)
    lines = path.read_bytes().splitlines()
    lines[LATE - 1] = change(lines[LATE - 1])
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def cut_parquet(project: Project, folder: Path) -> Path:
    path = folder / "input.parquet"
    write_input(project, folder / "input.csv")
    python = project.path / ".venv" / "bin" / "python"
    run(python, "-c", TO_PARQUET, folder / "input.csv", path, cwd=project.path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return path


# How an input is broken, and the problem its refusal names after the file's name.
BROKEN = {
    "empty": (empty, "the file is empty (0 bytes)"),
    "not-utf8": (
        lambda p, f: with_line_changed(p, f, lambda line: line.replace(b",", b"\xe9,", 1)),
        f"line {LATE} is not UTF-8 text (byte 0xe9)",
    ),
    "more-fields": (
        lambda p, f: with_line_changed(p, f, lambda line: line + b",7"),
        f"line {LATE} has 32 fields, the header 31",
    ),
    "fewer-fields": (
        lambda p, f: with_line_changed(p, f, lambda line: line.rsplit(b",", 3)[0]),
        f"line {LATE} has 28 fields, the header 31",
    ),
    "cut-parquet": (cut_parquet, "not a readable Parquet file: "),
}


def refused_and_nothing_written(project: Project, folder: Path, *arguments: str) -> str:
    """The one line `score` printed refusing, after checking it wrote no output, rejects or
    temporary (hidden) file."""
    before = sorted(folder.iterdir())
    refused = project.ops("score", *arguments, check=False)
    assert refused.returncode == 2, refused.stderr
    assert sorted(folder.iterdir()) == before
    [line] = refused.stderr.splitlines()
    return line


@pytest.mark.parametrize("broken", list(BROKEN))
def test_a_broken_input_is_refused_in_one_line_and_nothing_is_written(lived, tmp_path, broken):
    project, _ = lived
    make, problem = BROKEN[broken]
    source = make(project, tmp_path)
    target = tmp_path / f"scored{source.suffix}"
    line = refused_and_nothing_written(
        project, tmp_path, str(source), str(target), "--chunk-rows", "50"
    )
    assert line.startswith(f"score: refused: {source}: {problem}"), line


@pytest.mark.parametrize("chunk_rows", ["0", "-1"])
def test_chunks_of_no_rows_are_refused(lived, tmp_path, chunk_rows):
    project, _ = lived
    write_input(project, tmp_path / "input.csv")
    arguments = (str(tmp_path / "input.csv"), str(tmp_path / "scored.csv"))
    line = refused_and_nothing_written(project, tmp_path, *arguments, "--chunk-rows", chunk_rows)
    assert line == "score: refused: --chunk-rows must be at least 1"


# The holdout set repeated to millions of rows, with one row in each copy to reject: a signal sent
# once both temporaries exist lands while most of the input is still to score.
REPEATED_HOLDOUT = """
import sys
import pyarrow as pa
import pyarrow.parquet as pq
rows = pq.read_table("data/prepared/holdout.parquet").drop_columns(["malignant"]).to_pandas()
rows.loc[0, "symmetry_error"] = -1.5
table = pa.Table.from_pandas(rows, preserve_index=False)
copies = -(-int(sys.argv[2]) // len(rows))
pq.write_table(pa.concat_tables([table] * copies).slice(0, int(sys.argv[2])), sys.argv[1])
"""


@pytest.fixture(scope="module")
def big_input(lived, tmp_path_factory) -> Path:
    project, _ = lived
    path = tmp_path_factory.mktemp("big") / "big.parquet"
    python = project.path / ".venv" / "bin" / "python"
    run(python, "-c", REPEATED_HOLDOUT, path, "3000000", cwd=project.path)
    return path


def temporaries(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob(".*.partial"))


def start_scoring(project: Project, source: Path, target: Path) -> subprocess.Popen:
    """A `score` process, returned once it writes both its output and its rejects."""
    process = subprocess.Popen(
        project.cli("score", str(source), str(target)),
        cwd=project.path,
        env=project.process_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while len(temporaries(target.parent)) < 2:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    return process


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_an_interrupted_run_removes_its_temporaries(lived, tmp_path, big_input, signal_number):
    project, _ = lived
    process = start_scoring(project, big_input, tmp_path / "scored.parquet")
    process.send_signal(signal_number)
    process.communicate(timeout=600)
    assert process.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_the_next_run_removes_what_a_killed_run_left(lived, tmp_path, big_input):
    project, _ = lived
    small = tmp_path / "small.csv"
    write_input(project, small)
    target, rejects = tmp_path / "scored.parquet", tmp_path / "scored.rejects.csv"
    killed = start_scoring(project, big_input, target)
    left = temporaries(tmp_path)

    # A run to the same output meanwhile keeps the temporaries of the one still going.
    meanwhile = project.ops("score", str(small), str(target))
    assert "removed" not in meanwhile.stderr
    assert temporaries(tmp_path) == left
    target.unlink()
    rejects.unlink()

    killed.kill()  # SIGKILL: nothing can clean up
    killed.communicate(timeout=600)
    assert not target.exists() and not rejects.exists()
    assert temporaries(tmp_path) == left

    after = project.ops("score", str(small), str(target))
    assert after.stderr.splitlines() == [
        f"removed 2 temporary file(s) of earlier runs that were killed: {', '.join(left)}"
    ]
    assert temporaries(tmp_path) == []
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "scored.parquet",
        "scored.rejects.csv",
        "small.csv",
    ]


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
