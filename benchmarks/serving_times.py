"""Serving and batch scoring: render a project and run its own benchmark, `nox -s bench`.

The generated project's `benchmarks/serving.py` does the measuring (our service against
`mlflow models serve`, batch scoring, swaps under load) and prints the figures.
`--task binary|multiclass|regression` picks the project's task (default binary); every other
argument goes to the project's benchmark.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from projects import project_env, render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["binary", "multiclass", "regression"], default="binary")
    args, passed_on = parser.parse_known_args()
    scratch = Path(tempfile.mkdtemp(prefix="lab2prod-serving-"))
    project = render(scratch / "bench-project", {"task": args.task})
    command = ["uv", "run", "--locked", "nox", "-s", "bench", "--", *passed_on]
    sys.exit(subprocess.run(command, cwd=project, env=project_env()).returncode)


if __name__ == "__main__":
    main()
