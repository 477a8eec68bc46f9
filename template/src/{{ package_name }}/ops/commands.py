"""Run the tools the lifecycle drives (git, dvc, uv) and fail with what they printed."""

from __future__ import annotations

import subprocess
from pathlib import Path


class CommandError(Exception):
    """A tool failed; the message holds the command and its output."""


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """The command's standard output; CommandError with everything it printed if it fails."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CommandError(
            f"`{' '.join(command)}` failed (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}".rstrip()
        )
    return result.stdout
