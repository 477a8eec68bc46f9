"""Fixtures: each answer set is rendered once per test session (setup tasks take tens of
seconds) and shared by the tests that only read the project or run idempotent commands in it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from projects import (
    ANSWER_SETS,
    BUCKET,
    S3_ANSWERS,
    Project,
    free_port,
    live_story,
    render,
    s3_client,
    wait_for_port,
)


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


@pytest.fixture(scope="session")
def s3_env() -> Iterator[dict[str, str]]:
    """A real S3 protocol server on loopback, with an empty bucket."""
    port = free_port()
    server = subprocess.Popen(
        [Path(sys.executable).parent / "moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        wait_for_port(port, 10)
        s3_client(env).create_bucket(Bucket=BUCKET)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=10)


# Built once per registry kind: pytest sets a session fixture up again for a module that
# parametrizes it indirectly, which would rebuild the story (on S3, in a bucket already used).
LIVED: dict[str, tuple[Project, dict[str, object]]] = {}


@pytest.fixture(scope="session", params=["local", "s3"])
def lived(request, tmp_path_factory) -> tuple[Project, dict[str, object]]:
    if request.param not in LIVED:
        env = request.getfixturevalue("s3_env") if request.param == "s3" else {}
        answers = S3_ANSWERS if request.param == "s3" else {}
        path = render(tmp_path_factory.mktemp(request.param) / "project", answers, env=env)
        project = Project(path, env)
        LIVED[request.param] = project, live_story(project)
    return LIVED[request.param]
