"""Batch scoring on Dask in a generated project: files on S3 scored by a local cluster of two
worker processes give the single-process answers, a worker killed mid-run costs nothing but a
retry, and a run that cannot finish shows no output."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from projects import BUCKET, Project, run, s3_client
from test_batch import SEEDED, write_input

pytestmark = pytest.mark.parametrize("lived", ["s3"], indirect=True)

# A row of the CSV part with a bad value too: (1-based row in that file, column, value).
CSV_SEEDED = (5, "worst_texture", "abc")

SPLIT = """
import sys
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
rows = pd.read_csv(sys.argv[1], dtype=str)
folder = sys.argv[2]
# Small row groups, so --piece-rows splits the first file over several tasks.
pq.write_table(pa.Table.from_pandas(rows.iloc[:300], preserve_index=False),
               f"{folder}/a.parquet", row_group_size=60)
rows.iloc[300:450].to_csv(f"{folder}/b.csv", index=False)
pq.write_table(pa.Table.from_pandas(rows.iloc[450:], preserve_index=False), f"{folder}/c.parquet")
"""

READ = """
import json, sys
from pathlib import Path
import pandas as pd
folder = Path(sys.argv[1])
scored = pd.read_parquet(folder)  # what a dataset reader sees: _SUCCESS and _rejects skipped
rejects = [pd.read_csv(path, dtype=str).assign(part=path.stem)
           for path in sorted((folder / "_rejects").glob("*.csv"))]
print(json.dumps({
    "scored": json.loads(scored.to_json(orient="records", double_precision=15)),
    "rejects": json.loads(pd.concat(rejects).to_json(orient="records")),
}))
"""

COPIES = """
import sys
import pandas as pd
rows = pd.read_csv(sys.argv[1], dtype=str)
for number in range(int(sys.argv[3])):
    rows.to_parquet(f"{sys.argv[2]}/{number:02d}.parquet", index=False)
"""


def upload(env: dict[str, str], folder: Path, prefix: str) -> str:
    client = s3_client(env)
    for path in sorted(folder.iterdir()):
        client.upload_file(str(path), BUCKET, f"{prefix}/{path.name}")
    return f"s3://{BUCKET}/{prefix}"


def download(env: dict[str, str], prefix: str, folder: Path) -> list[str]:
    """Every object under prefix, into folder; their names."""
    client = s3_client(env)
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/").get("Contents", [])
    names = []
    for entry in listed:
        name = entry["Key"].removeprefix(f"{prefix}/")
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, entry["Key"], str(folder / name))
        names.append(name)
    return sorted(names)


def scored_record(project: Project) -> dict:
    client = s3_client(project.env)
    prefix = f"registry/{project.package}/log/"
    keys = sorted(
        o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
    )
    body = json.loads(client.get_object(Bucket=BUCKET, Key=keys[-1])["Body"].read())["body"]
    assert body["action"] == "scored"
    return body["details"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_files_on_s3_are_scored_on_two_workers_as_one_process_scores_them(lived, tmp_path):
    project, _ = lived
    python = project.path / ".venv" / "bin" / "python"
    whole = tmp_path / "whole.csv"
    rows_in = write_input(project, whole)
    with whole.open() as handle:
        rows = list(csv.DictReader(handle))
    bad_row, column, value = CSV_SEEDED
    rows[300 + bad_row - 1][column] = value
    with whole.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    run(python, "-c", SPLIT, whole, inputs, cwd=project.path)
    prefix = f"dask/{uuid.uuid4().hex}"
    source = upload(project.env, inputs, f"{prefix}/in")

    result = project.ops(
        "score", f"{source}/", f"s3://{BUCKET}/{prefix}/out", "--engine", "dask",
        "--workers", "2", "--piece-rows", "100", "--chunk-rows", "40",
    )  # fmt: skip
    details = scored_record(project)
    version = project.serving()
    rejected = len(SEEDED) + 1
    assert (
        f"scored {rows_in - rejected} of {rows_in} rows from 3 file(s) with version {version} "
        "on 2 Dask worker(s) into 7 part(s)"
    ) in result.stdout

    out = tmp_path / "out"
    names = download(project.env, f"{prefix}/out", out)
    parts = [f"part-{n:05d}.parquet" for n in range(7)]
    rejects = [f"_rejects/part-{n:05d}.csv" for n in range(7)]
    assert names == sorted(["_SUCCESS", *parts, *rejects])  # the staging is gone
    seen = json.loads(run(python, "-c", READ, out, cwd=project.path).stdout)
    scored = {row["patient_id"]: row for row in seen["scored"]}
    assert len(scored) == len(seen["scored"]) == rows_in - rejected
    assert {row["model_version"] for row in seen["scored"]} == {version}
    # Rows count in their own file; the manifest names each part's file.
    assert [(r["part"], int(r["row"]), r["patient_id"]) for r in seen["rejects"]] == [
        *(("part-00000" if s[0] <= 60 else "part-00001", s[0], f"p{s[0]:04d}") for s in SEEDED),
        ("part-00005", bad_row, f"p{300 + bad_row:04d}"),
    ]
    assert seen["rejects"][-1]["reason"] == "worst_texture: not a finite number: abc"

    # The single-process engine, on the same rows, gives the same answers.
    project.ops("score", str(whole), str(tmp_path / "one.csv"))
    with (tmp_path / "one.csv").open() as handle:
        alone = {row["patient_id"]: row for row in csv.DictReader(handle)}
    assert alone.keys() == scored.keys()
    for key, row in alone.items():
        assert str(scored[key]["prediction"]) == row["prediction"]
        for name in (n for n in row if n.startswith("probability_")):
            assert scored[key][name] == pytest.approx(float(row[name]), abs=1e-12)

    assert details["engine"] == "dask" and details["workers"] == 2
    assert (details["rows_in"], details["rows_rejected"]) == (rows_in, rejected)
    assert [(i["url"], i["sha256"]) for i in details["inputs"]] == [
        (f"{source}/{path.name}", sha256(path)) for path in sorted(inputs.iterdir())
    ]
    assert {p["part"]: p["sha256"] for p in details["parts"]} == {n: sha256(out / n) for n in parts}
    assert [p["rejects_sha256"] for p in details["parts"]] == [sha256(out / n) for n in rejects]
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert [p["sha256"] for p in manifest["parts"]] == [sha256(out / n) for n in parts]


def children(pid: int) -> list[int]:
    """The processes `pid` started (Dask's worker processes among them)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid
            ):
                found.append(int(entry.name))
        except OSError:
            continue  # ended meanwhile
    return found


def worker_processes(pid: int) -> list[int]:
    return [
        child
        for child in children(pid)
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def test_a_worker_killed_mid_run_is_replaced_and_the_run_completes(lived, tmp_path):
    project, _ = lived
    python = project.path / ".venv" / "bin" / "python"
    whole = tmp_path / "whole.csv"
    rows_in = write_input(project, whole)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    files = 6
    run(python, "-c", COPIES, whole, inputs, str(files), cwd=project.path)
    source = upload(project.env, inputs, f"dask/{uuid.uuid4().hex}/in")
    target = tmp_path / "out"
    # Small chunks: every one writes its rows to the inference log on S3, so tasks take a while.
    process = subprocess.Popen(
        project.cli("score", source, str(target), "--engine", "dask", "--workers", "2",
                    "--chunk-rows", "25"),
        cwd=project.path, env=project.process_env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    staged = []
    while not staged:
        assert process.poll() is None, process.communicate()
        staged = list(tmp_path.glob(".out.*.partial/part-*.parquet"))
        time.sleep(0.05)
    victim = worker_processes(process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    assert not target.exists()  # killed mid-run, before anything is visible
    stdout, stderr = process.communicate(timeout=300)

    assert process.returncode == 0, stderr
    assert f"scored {files * (rows_in - len(SEEDED))} of {files * rows_in} rows" in stdout
    parts = [f"part-{n:05d}.parquet" for n in range(files)]
    assert sorted(p.name for p in target.iterdir()) == ["_SUCCESS", "_rejects", *parts]
    assert len(list((target / "_rejects").iterdir())) == files  # no killed writer's temporaries
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    seen = json.loads(run(python, "-c", READ, target, cwd=project.path).stdout)
    assert len(seen["scored"]) == files * (rows_in - len(SEEDED))
    assert {row["model_version"] for row in seen["scored"]} == {project.serving()}


def test_what_cannot_be_scored_is_refused_in_one_line_and_nothing_is_written(lived, tmp_path):
    project, _ = lived
    target = tmp_path / "out"
    nothing = project.ops(
        "score", f"s3://{BUCKET}/dask/none-{uuid.uuid4().hex}/*.csv", str(target),
        "--engine", "dask", check=False,
    )  # fmt: skip
    assert nothing.returncode == 2
    assert nothing.stderr.strip().endswith("no .csv or .parquet file there")

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_input(project, inputs / "good.csv")
    lines = (inputs / "good.csv").read_text().splitlines()
    (inputs / "short.csv").write_text("\n".join([*lines[:40], lines[40] + ",1", *lines[41:]]))
    source = upload(project.env, inputs, f"dask/{uuid.uuid4().hex}/in")
    broken = project.ops(
        "score", source, str(target), "--engine", "dask", "--workers", "2", check=False
    )
    assert broken.returncode == 2
    assert broken.stderr.splitlines() == [
        f"score: refused: {source}/short.csv: line 41 has {len(lines[0].split(',')) + 1} fields, "
        f"the header {len(lines[0].split(','))}"
    ]

    unreachable = project.ops(
        "score", source, str(target), "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9",
        check=False, env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"},
    )  # fmt: skip
    assert unreachable.returncode == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in unreachable.stderr
    assert list(tmp_path.iterdir()) == [inputs]
