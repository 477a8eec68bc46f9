"""`gc` empties what nothing needs and keeps what rollback and reproduce need.

A clone of the local-registry project after its lifecycle story (versions 1 and 2 served, then a
rollback) gets 28 more versions, published in-process with the project's own keys, two of which
serve (a deploy, another, a rollback); a year of inference-log and feedback days; the temporary
of a killed run; and a commit whose data no recorded version was built from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from projects import Project, local_registry, run

pytestmark = pytest.mark.parametrize("lived", ["local"], indirect=True)

SERVED_LATER = (5, 12)  # of the new versions, the two that serve

# Run in the project's environment: publishes copies of the newest bundle (each with its own
# bytes) as new versions, and writes a year of inference-log and feedback days.
CROWD = """
import io, json, sys, zipfile
from datetime import date, datetime, timedelta, UTC
import pyarrow as pa, pyarrow.parquet as pq
from {package}.ops import settings, signing
from {package}.ops.registry import open_registry

config = settings.load()
registry = open_registry(config)
signer = signing.signer_for("published", config.project_dir, registry.log.trust)
count, unrecorded, served = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
state = registry.state()
newest = state.versions[max(state.versions)]
data = registry.bundle(max(state.versions), state)
for number in range(len(state.versions) + 1, len(state.versions) + count + 1):
    buffer = io.BytesIO(data)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.comment = f"copy {{number}}".encode()
    # Versions that will serve come from a kept commit; the others from one gc may forget.
    last = number == len(state.versions) + count
    commit = newest["manifest"]["git_commit"] if number in served or last else unrecorded
    manifest = dict(newest["manifest"], git_commit=commit)
    registry.publish(buffer.getvalue(), manifest, newest["gate"], "tester", signer)
today = datetime.now(UTC).date()
for back in range(365):
    day = today - timedelta(days=back)
    time = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    rows = pa.table({{"request_id": ["r1"], "row": pa.array([0], pa.int32()),
                      "time": pa.array([time], pa.timestamp("us", tz="UTC"))}})
    for folder, part in (("inference", "/version=1"), ("feedback", "")):
        path = f"{{registry.root}}/{{folder}}/day={{day}}{{part}}/120000-0123abcd.parquet"
        registry.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        pq.write_table(rows, path)
"""


def git(project: Project, *arguments: str) -> str:
    return run("git", *arguments, cwd=project.path).stdout.strip()


def cache_object(project: Project, md5: str) -> Path:
    return project.path / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def raw_md5(project: Project, commit: str) -> str:
    return yaml.safe_load(git(project, "show", f"{commit}:data/raw.dvc"))["outs"][0]["md5"]


def model_md5(project: Project, commit: str) -> str:
    lock = yaml.safe_load(git(project, "show", f"{commit}:dvc.lock"))
    return next(out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])
                if out["path"].endswith(".joblib"))  # fmt: skip


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path): (path.stat().st_size, path.stat().st_mtime_ns)
        for root in roots
        for path in root.rglob("*")
        if path.is_file()
    }


def records(registry: Path, package: str) -> list[dict]:
    return [json.loads(path.read_text())["body"]
            for path in sorted((registry / package / "log").glob("*.json"))]  # fmt: skip


def set_retention(project: Project, bundles_days: int, inference_days: int) -> None:
    params = project.path / "params.yaml"
    text = params.read_text()
    section = text[text.index("retention:") :]
    wanted = f"retention:\n  bundles_days: {bundles_days}\n  inference_days: {inference_days}\n"
    params.write_text(text.replace(section, wanted))


@pytest.fixture
def crowded(lived, tmp_path) -> tuple[Project, Path, str]:
    """A clone of the lived project with 30 versions, a year of logs, a killed run's temporary
    and the commit of data nothing recorded uses; the registry and that commit."""
    source, _ = lived
    path = tmp_path / "project"
    run("git", "clone", "--quiet", source.path, path, cwd=tmp_path)
    shutil.copytree(source.path / ".keys", path / ".keys")
    registry = tmp_path / local_registry(source).name
    shutil.copytree(local_registry(source), registry)
    project = Project(path, source.env)
    # The data of every commit the story built, as on the machine that built them.
    shutil.copytree(source.path / ".dvc" / "cache", path / ".dvc" / "cache")
    run("uv", "sync", "--locked", "--quiet", cwd=path)
    run("uv", "run", "dvc", "checkout", "--quiet", cwd=path)
    # Data that arrived and left again: only the commit between needs it.
    extra = path / "data" / "raw" / "extra.csv"
    lines = (path / "data" / "raw" / "breast_cancer.csv").read_text().splitlines()
    extra.write_text("\n".join(lines[:40]) + "\n")
    for message in ("Extra rows", "Extra rows withdrawn"):
        run("uv", "run", "dvc", "add", "data/raw", "--quiet", cwd=path)
        git(project, "add", "--all")
        git(project, "commit", "--quiet", "-m", message)
        if extra.exists():
            unrecorded = git(project, "rev-parse", "HEAD")
            extra.unlink()
    python = path / ".venv" / "bin" / "python"
    served = [len(records_of_versions(registry, project.package)) + n for n in SERVED_LATER]
    script = CROWD.format(package=project.package)
    run(python, "-c", script, "28", unrecorded, json.dumps(served), cwd=path, env=project.env)
    for number in served:
        project.ops("deploy", "--version", str(number), "--approved-by", "Ada Lovelace")
    project.ops("rollback", "--approved-by", "Ada Lovelace", "--reason", "slower than before")
    # The temporary of a bundle write whose process was killed.
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = f".x.zip.{socket.gethostname()}.{dead.pid}.0123abcd.partial"
    bundles = registry / project.package / "bundles"
    (bundles / leftover).write_bytes(b"half a bundle")
    # Bundles no record names: a publish stopped two days ago, and one under way now.
    for digest, age in (("0" * 64, 2 * 86400), ("1" * 64, 0)):
        (bundles / f"{digest}.zip").write_bytes(b"a bundle without its record")
        os.utime(bundles / f"{digest}.zip", (time.time() - age, time.time() - age))
    return project, registry, unrecorded


def records_of_versions(registry: Path, package: str) -> list[dict]:
    return [body for body in records(registry, package) if body["action"] == "published"]


def test_gc_keeps_what_served_and_frees_the_rest(crowded):
    project, registry, unrecorded = crowded
    root = registry / project.package
    cache = project.path / ".dvc" / "cache"
    published = records_of_versions(registry, project.package)
    assert len(published) == 30
    served = {1, 2, *(2 + n for n in SERVED_LATER)}
    bundle_of = {body["details"]["version"]: body["details"]["bundle_sha256"] for body in published}
    recorded = {body["details"]["manifest"]["git_commit"] for body in published[:2]}
    extra_md5 = hashlib.md5(
        "\n".join((project.path / "data" / "raw" / "breast_cancer.csv").read_text()
                  .splitlines()[:40]).encode() + b"\n"
    ).hexdigest()  # fmt: skip
    unrecorded_objects = [cache_object(project, raw_md5(project, unrecorded)),
                          cache_object(project, extra_md5)]  # fmt: skip
    kept_objects = [cache_object(project, md5(project, commit))
                    for commit in recorded for md5 in (raw_md5, model_md5)]  # fmt: skip
    assert all(path.exists() for path in unrecorded_objects + kept_objects)

    # The defaults keep every version (all are new) and a year of logs.
    before = snapshot(root, cache)
    dry = project.ops("gc").stdout
    assert "never served: none" in dry and "would remove" in dry
    set_retention(project, 0, 30)
    dry = project.ops("gc").stdout
    assert snapshot(root, cache) == before  # a dry run changes nothing
    going = sorted(set(range(3, 30)) - served)
    assert f"never served: {', '.join(map(str, going))} (" in dry
    assert "inference log: 334 days" in dry and "leftovers of killed runs: 1 " in dry
    assert "bundles no record names: 1 " in dry

    applied = project.ops("gc", "--apply").stdout
    assert "gc: removed" in applied
    collected = records(registry, project.package)[-1]
    assert collected["action"] == "collected"
    details = collected["details"]
    assert details["versions"] == going
    assert details["bundles_sha256"] == {str(number): bundle_of[number] for number in going}
    freed_bundles = sum(before[str(root / "bundles" / f"{bundle_of[n]}.zip")][0] for n in going)
    assert details["bytes_freed"] > freed_bundles > 0 and details["duration_seconds"] >= 0
    assert len(details["days"]["inference"]) == len(details["days"]["feedback"]) == 334
    for number in range(1, 31):
        kept = number in served or number == 30
        assert (root / "bundles" / f"{bundle_of[number]}.zip").exists() == kept, number
    today = datetime.now(UTC).date()
    days = sorted(path.name for path in (root / "inference").iterdir())
    assert days == [f"day={today - timedelta(days=back)}" for back in range(30, -1, -1)]
    assert len(list((root / "feedback").iterdir())) == 31
    assert not list((root / "bundles").glob(".*.partial"))
    assert details["orphan_bundles"] == [str(root / "bundles" / f"{'0' * 64}.zip")]
    assert not (root / "bundles" / f"{'0' * 64}.zip").exists()
    assert (root / "bundles" / f"{'1' * 64}.zip").exists()
    assert not any(path.exists() for path in unrecorded_objects)
    assert all(path.exists() for path in kept_objects)

    # The log explains what went; what served still rolls back and reproduces.
    project.ops("audit")
    refused = project.ops("deploy", "--version", str(going[0]), "--approved-by", "x", check=False)
    assert refused.returncode == 2
    assert f"version {going[0]}'s bundle was removed by gc on {today}" in refused.stderr
    assert "it never served" in refused.stderr
    # The dashboard still draws every card, and says which bundles went.
    page = project.path / "reports" / "after-gc.html"
    project.ops("dashboard", "--output", str(page))
    assert f"version {going[0]}&#x27;s bundle was removed by gc on {today}" in page.read_text()
    project.ops("deploy", "--version", str(2 + SERVED_LATER[1]), "--approved-by", "Ada Lovelace")
    project.ops("rollback", "--approved-by", "Ada Lovelace", "--reason", "after gc")
    assert project.serving() == 2 + SERVED_LATER[0]
    assert "matches the registry" in project.ops("reproduce", "--version", "2").stdout
    again = project.ops("gc", "--apply").stdout
    assert "never served: none" in again
