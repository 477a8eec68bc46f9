"""Run the tools the lifecycle drives (git, dvc, uv) and fail with what they printed."""

from __future__ import annotations

import re
import subprocess
import time
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


STAGE_LINE = re.compile(r"^Running stage '([^']+)'")


def stage_seconds(command: list[str], cwd: Path) -> dict[str, float]:
    """Run `dvc repro` and time each stage it runs, from its "Running stage 'NAME':" line to the
    next stage's (or the end), as the output streams; CommandError if it fails."""
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    printed, seconds = [], {}
    current, since = None, 0.0
    for line in process.stdout:
        printed.append(line)
        now = time.monotonic()
        started = STAGE_LINE.match(line)
        if started:
            if current:
                seconds[current] = round(now - since, 3)
            current, since = started.group(1), now
    code = process.wait()
    if current:
        seconds[current] = round(time.monotonic() - since, 3)
    if code != 0:
        output = "".join(printed).rstrip()
        raise CommandError(f"`{' '.join(command)}` failed (exit {code}):\n{output}")
    return seconds
