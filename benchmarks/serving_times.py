"""Serving and batch scoring: render a project and run its own benchmark, `nox -s bench`.

The generated project's `benchmarks/serving.py` does the measuring (our service against
`mlflow models serve`, batch scoring, swaps under load) and prints the figures.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from projects import project_env, render


def main() -> None:
    project = render(Path(tempfile.mkdtemp(prefix="lab2prod-serving-")) / "bench-project", {})
    command = ["uv", "run", "--locked", "nox", "-s", "bench", "--", *sys.argv[1:]]
    sys.exit(subprocess.run(command, cwd=project, env=project_env()).returncode)


if __name__ == "__main__":
    main()
