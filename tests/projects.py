"""Render the template like a user would, and run commands in the generated projects."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import copier

TEMPLATE = Path(__file__).resolve().parents[1]

# Answer sets the suite renders: the defaults, and one answer changed at a time from them.
ANSWER_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "gitlab": {"ci_provider": "gitlab", "license": "Apache-2.0"},
    "no-ci": {
        "project_name": "Credit Risk Scoring",
        "package_name": "credit_risk_scoring",
        "ci_provider": "none",
        "license": "BSD-3-Clause",
    },
}


def project_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a user's shell: no virtualenv of ours leaking in, bytecode cached as
    Python does by default, and no DVC usage reports from tests."""
    ours = {"VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE"}
    env = {name: value for name, value in os.environ.items() if name not in ours}
    env["DVC_NO_ANALYTICS"] = "1"
    return env | (extra or {})


def run(
    *command: str | Path, cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command in a generated project; on failure, show everything it printed."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=project_env(env),
        capture_output=True,
        text=True,
        check=False,
    )
    if check:
        assert result.returncode == 0, (
            f"`{' '.join(map(str, command))}` exited {result.returncode} in {cwd}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def render(
    destination: Path,
    answers: dict[str, Any],
    *,
    tasks: bool = True,
    env: dict[str, str] | None = None,
) -> Path:
    """`copier copy` of this checkout, including uncommitted changes (vcs_ref=HEAD)."""
    old_env = dict(os.environ)
    os.environ.clear()
    os.environ.update(project_env(env))
    try:
        copier.run_copy(
            str(TEMPLATE),
            destination,
            data=answers,
            defaults=True,
            unsafe=True,
            vcs_ref="HEAD",
            quiet=True,
            skip_tasks=not tasks,
        )
    finally:
        os.environ.clear()
        os.environ.update(old_env)
    return destination
