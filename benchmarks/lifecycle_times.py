"""How long the lifecycle takes on the example project, with the default local registry.

1. From a data change to the new version serving in production: `nox -s retrain` followed by
   `nox -s deploy`, after appending rows to the raw data (`dvc add` and a commit, not timed).
   Median of N runs (default 5); target within 20 s.
2. `nox -s audit` on logs of growing length up to 10,000 records (target within 2 s), next to
   the time of a Python start that imports the CLI and does nothing (the floor of any command).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from projects import render, run

# Written inside the project's environment: extends the log with promote/rollback records
# through the real encoder and create-if-absent write, then exits.
GROW_LOG = """
import sys
from {package}.ops import audit, settings, signing, storage
from {package}.ops.registry import open_registry

target = int(sys.argv[1])
config = settings.load()
registry = open_registry(config)
log = registry.log
signer = signing.signer_for("promoted", config.project_dir, log.trust)
records = log.records()
previous, sequence = records[-1].sha256, len(records)
staging = registry.state().history.get("staging", [])
while sequence < target:
    sequence += 1
    if not staging:
        action, details = "promoted", {{"version": 1, "stage": "staging", "from_version": None}}
        staging.append(1)
    elif staging[-1] == 1:
        action, details = "promoted", {{"version": 2, "stage": "staging", "from_version": 1}}
        staging.append(2)
    else:
        action, details = "rolled_back", {{"stage": "staging", "from_version": 2, "to_version": 1}}
        staging.pop()
    data = audit.encode(sequence, action, "bench", details, previous, signer)
    assert storage.create(log.fs, log.path(sequence), data)
    previous = audit.Record.parse(str(sequence), data).sha256
"""


def seconds(*command: str | Path, cwd: Path) -> float:
    start = time.perf_counter()
    run(*command, cwd=cwd)
    return time.perf_counter() - start


def append_rows(project: Path, run_number: int) -> None:
    raw = project / "data" / "raw"
    lines = (raw / "breast_cancer.csv").read_text().splitlines()
    rows = []
    for line in lines[1 + 20 * run_number : 21 + 20 * run_number]:
        *features, target = line.split(",")
        rows.append(",".join([*(f"{float(v) * 1.01:.6g}" for v in features), target]))
    (raw / f"batch-{run_number}.csv").write_text("\n".join([lines[0], *rows]) + "\n")
    run("uv", "run", "dvc", "add", "--quiet", "data/raw", cwd=project)
    run("git", "add", "--all", cwd=project)
    run(
        "git",
        "-c",
        "user.name=bench",
        "-c",
        "user.email=bench@localhost",
        "commit",
        "-qm",
        f"batch {run_number}",
        cwd=project,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="1000,2500,5000,10000")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lab2prod-bench-") as scratch:
        project = render(Path(scratch) / "bench-project", {})
        package = "bench_project"
        nox = ("uv", "run", "--locked", "nox", "-s")
        run(*nox, "retrain", cwd=project)
        run(*nox, "deploy", "--", "--approved-by", "bench", cwd=project)

        print("data change -> new version serving in production (retrain + deploy)")
        totals = []
        for number in range(args.runs):
            append_rows(project, number)
            retrain = seconds(*nox, "retrain", cwd=project)
            deploy = seconds(*nox, "deploy", "--", "--approved-by", "bench", cwd=project)
            totals.append(retrain + deploy)
            print(
                f"  run {number + 1}: retrain {retrain:.2f} s + deploy {deploy:.2f} s "
                f"= {retrain + deploy:.2f} s",
                flush=True,
            )
        print(f"median {statistics.median(totals):.2f} s (target <= 20 s)\n")

        python = project / ".venv" / "bin" / "python"
        floor = min(
            seconds(python, "-c", f"import {package}.ops.cli", cwd=project) for _ in range(3)
        )
        print(f"audit of the whole log; Python start + CLI import alone: {floor:.2f} s")
        print(f"{'records':>8} {'nox -s audit':>13} {'ops.cli audit':>14} {'per 1k records':>15}")
        for size in map(int, args.sizes.split(",")):
            run(python, "-c", GROW_LOG.format(package=package), str(size), cwd=project)
            via_nox = seconds(*nox, "audit", cwd=project)
            direct = min(
                seconds(python, "-m", f"{package}.ops.cli", "audit", cwd=project) for _ in range(3)
            )
            per_thousand = (direct - floor) / size * 1000
            print(
                f"{size:>8} {via_nox:>11.2f} s {direct:>12.2f} s {per_thousand:>13.3f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
