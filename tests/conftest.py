"""Render the template like a user would, and run commands in the generated projects.

Rendering with tasks takes tens of seconds, so each answer set is rendered once per test session
and shared by the tests that only read the project or run idempotent commands in it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from collections.abc import Callable
from typing import Any

import copier
import pytest

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


def project_env() -> dict[str, str]:
    """The environment of a user's shell: no virtualenv of ours leaking in, bytecode cached as
    Python does by default, and no DVC usage reports from tests."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE"}}
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(*command: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command in a generated project; on failure, show everything it printed."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=project_env(),
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


def render(destination: Path, answers: dict[str, Any], *, tasks: bool = True) -> Path:
    """`copier copy` of this checkout, including uncommitted changes (vcs_ref=HEAD)."""
    old_env = dict(os.environ)
    os.environ.clear()
    os.environ.update(project_env())
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


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """generated(name): the project for an answer set, rendered with its tasks (git, uv.lock,
    DVC, first commit) on first use and shared by every test after that."""
    projects: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in projects:
            projects[name] = render(tmp_path_factory.mktemp(name) / "project", ANSWER_SETS[name])
        return projects[name]

    return get


@pytest.fixture(params=list(ANSWER_SETS))
def project(request: pytest.FixtureRequest, generated: Callable[[str], Path]) -> Path:
    return generated(request.param)
