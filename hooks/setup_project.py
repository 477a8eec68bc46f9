"""Turn a freshly rendered lab2prod project into a clean, reproducible repository.

copier runs this once after `copier copy`, inside the new project, with copier's own Python
(standard library only). It makes the git repository and the locked environment (uv, or conda
through the project's own `nox -s lock env`), then runs `track_data.py` inside that environment
for the DVC steps, and makes the first commit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

HOOKS = Path(__file__).resolve().parent

INSTALL_HINTS = {
    "git": "install git (e.g. `apt-get install git`, `brew install git`, or https://git-scm.com)",
    "uv": "install uv with `pip install uv` (or see https://docs.astral.sh/uv/)",
    "conda": (
        "install micromamba (https://mamba.readthedocs.io/en/latest/installation/"
        "micromamba-installation.html), or Miniforge for mamba and conda; conda-lock needs one"
    ),
}
NOX = "nox@2026.10.20"
CONDA_SOLVERS = ("micromamba", "mamba", "conda")


class SetupError(Exception):
    """A step failed in a way the user can fix; the message says how."""


def require_tools(*names: str) -> None:
    def found(name: str) -> bool:
        solvers = CONDA_SOLVERS if name == "conda" else (name,)
        return any(shutil.which(solver) for solver in solvers)

    missing = [name for name in names if not found(name)]
    if missing:
        hints = "\n".join(f"  - {name}: {INSTALL_HINTS[name]}" for name in missing)
        raise SetupError(f"lab2prod needs these tools on PATH, and they are missing:\n{hints}")


def run(*command: str, env: dict[str, str] | None = None) -> str:
    """Run a command in the project; on failure, raise with its output so the user sees why."""
    print(f"lab2prod: $ {' '.join(command)}", file=sys.stderr, flush=True)
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise SetupError(f"`{' '.join(command)}` failed (exit {result.returncode}):\n{output}")
    return result.stdout


def uv_environment() -> dict[str, str]:
    """The caller's environment without an activated virtualenv, so uv uses the project's .venv."""
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def git_identity(author: str) -> list[str]:
    """Use the answered author for the first commit when git has no identity configured."""
    configured = subprocess.run(
        ["git", "config", "user.email"], capture_output=True, text=True, check=False
    )
    if configured.returncode == 0 and configured.stdout.strip():
        return []
    name, _, email = author.partition(" <")
    return ["-c", f"user.name={name}", "-c", f"user.email={email.rstrip('>')}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--package", required=True)
    parser.add_argument("--remote", required=True)
    parser.add_argument("--author", required=True)
    parser.add_argument("--env-manager", choices=["uv", "conda"], default="uv")
    args = parser.parse_args()

    try:
        conda = args.env_manager == "conda"
        require_tools("git", "uv", *(["conda"] if conda else []))
        run("git", "init", "--quiet", "--initial-branch=main")
        env = uv_environment()
        track_data = [str(HOOKS / "track_data.py"), "--package", args.package,
                      "--remote", args.remote]  # fmt: skip
        if conda:
            run("uvx", NOX, "--sessions", "lock", "env", env=env)
            bin_dir = Path(".conda-env", "bin").resolve()
            env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
            run(str(bin_dir / "python"), *track_data, env=env)
        else:
            run("uv", "lock", "--quiet", env=env)
            run("uv", "sync", "--locked", "--quiet", env=env)
            run("uv", "run", "--locked", "--no-sync", "python", *track_data, env=env)
        run("git", "add", "--all")
        run(
            "git",
            *git_identity(args.author),
            "commit",
            "--quiet",
            "--message",
            "Start the project from the lab2prod template",
        )
    except SetupError as error:
        print(f"\nlab2prod: project setup stopped.\n{error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
