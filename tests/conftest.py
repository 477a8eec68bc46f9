"""Fixtures: each answer set is rendered once per test session (setup tasks take tens of
seconds) and shared by the tests that only read the project or run idempotent commands in it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from projects import ANSWER_SETS, render


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
