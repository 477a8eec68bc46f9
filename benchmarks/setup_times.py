"""How long a new user waits: render, generate with setup tasks, and run the pipeline.

Prints the median of N runs (default 5) of each step, against the targets of the template:
rendering alone within 1.5 s, generation with tasks plus the first `nox -s repro` within 30 s.
Generation is measured with a warm package cache: one unmeasured generation runs first.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from projects import TEMPLATE, project_env

COPIER = Path(sys.executable).parent / "copier"


def timed(*command: str | Path, cwd: Path | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=project_env(),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def copy(destination: Path, *, tasks: bool) -> float:
    flags = ["--trust", "--defaults", "--quiet", "--vcs-ref", "HEAD"]
    if not tasks:
        flags.append("--skip-tasks")
    return timed(COPIER, "copy", *flags, TEMPLATE, destination)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    samples: dict[str, list[float]] = {}

    def record(step: str, seconds: float) -> None:
        samples.setdefault(step, []).append(seconds)
        print(f"  {step}: {seconds:.2f} s", flush=True)

    with tempfile.TemporaryDirectory(prefix="lab2prod-bench-") as scratch:
        root = Path(scratch)
        print("warming the package cache with one unmeasured generation", flush=True)
        copy(root / "warm-up", tasks=True)
        for run in range(runs):
            print(f"run {run + 1} of {runs}", flush=True)
            record("render (copier copy --skip-tasks)", copy(root / f"render-{run}", tasks=False))
            project = root / f"project-{run}"
            generate = copy(project, tasks=True)
            record("copier copy with tasks", generate)
            first_repro = timed("uv", "run", "--locked", "nox", "-s", "repro", cwd=project)
            record("first nox -s repro", first_repro)
            record("copy + tasks + first repro", generate + first_repro)
            record(
                "nox -s repro -- --force",
                timed("uv", "run", "--locked", "nox", "-s", "repro", "--", "--force", cwd=project),
            )
            record("no-op dvc repro", timed("uv", "run", "--locked", "dvc", "repro", cwd=project))

    targets = {
        "render (copier copy --skip-tasks)": 1.5,
        "copy + tasks + first repro": 30.0,
    }
    print(f"\nmedians of {runs} runs (seconds)")
    print(f"{'step':<36} {'median':>8} {'min':>8} {'max':>8}  target")
    for step, values in samples.items():
        target = f"<= {targets[step]:.1f}" if step in targets else ""
        print(
            f"{step:<36} {statistics.median(values):8.2f} {min(values):8.2f} "
            f"{max(values):8.2f}  {target}"
        )


if __name__ == "__main__":
    main()
