"""Bad answers and missing tools stop `copier copy` with a message that says what to do, and
leave nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from projects import TEMPLATE, render

INVALID_ANSWERS = [
    (
        {"package_name": "1churn"},
        "Validation error for question 'package_name': Type a lowercase Python identifier",
    ),
    ({"package_name": "churn-model"}, "Type a lowercase Python identifier"),
    ({"package_name": "class"}, "'class' is a Python keyword; type another name"),
    ({"package_name": "tests"}, "'tests' would shadow a folder or library of the project"),
    ({"project_name": "  "}, "Type a name for the project"),
    ({"project_slug": "Churn Model"}, "Type lowercase letters and digits joined by single hyphens"),
    (
        {"python_version": "3.9"},
        "Invalid choice for 'python_version': '3.9' is not in ['3.11', '3.12', '3.13']",
    ),
    (
        {"author_email": "ada.example.com"},
        "Validation error for question 'author_email': Type an email address",
    ),
    ({"author_email": "ada@localhost"}, "Type an email address such as ada@example.com"),
    (
        {"dvc_remote": "ftp://files.example.com/dvc"},
        "Unknown or incomplete remote URL 'ftp://files.example.com/dvc'",
    ),
    ({"dvc_remote": "s3://"}, "Unknown or incomplete remote URL 's3://'"),
    (
        {"ci_provider": "jenkins"},
        "Invalid choice for 'ci_provider': 'jenkins' is not in ['github', 'gitlab', 'none']",
    ),
    ({"license": "GPL"}, "Invalid choice for 'license'"),
]


@pytest.mark.parametrize(("answers", "message"), INVALID_ANSWERS)
def test_an_invalid_answer_is_refused_and_nothing_is_written(tmp_path, answers, message):
    destination = tmp_path / "project"
    with pytest.raises(ValueError) as raised:
        render(destination, answers, tasks=False)
    assert message in str(raised.value)
    assert not destination.exists()


@pytest.mark.parametrize(
    "answers",
    [
        {"dvc_remote": "s3://team-bucket/dvc"},
        {"dvc_remote": "/srv/dvc-storage"},
        {"author_email": "ada@lab.example.org"},
        {"project_name": "Über Model 2"},
    ],
)
def test_valid_answers_render(tmp_path, answers):
    destination = render(tmp_path / "project", answers, tasks=False)
    assert (destination / "pyproject.toml").is_file()


def test_the_remote_scheme_selects_the_dvc_plugin(tmp_path):
    s3 = render(tmp_path / "s3", {"dvc_remote": "s3://bucket/dvc"}, tasks=False)
    local = render(tmp_path / "local", {}, tasks=False)
    assert '"dvc[s3]>=' in (s3 / "pyproject.toml").read_text()
    assert '"dvc>=' in (local / "pyproject.toml").read_text()


def path_without(tmp_path: Path, *missing: str) -> str:
    """A PATH like this machine's, on which the named tools do not exist."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in map(Path, os.environ["PATH"].split(os.pathsep)):
        if not directory.is_dir():
            continue
        for tool in directory.iterdir():
            link = bin_dir / tool.name
            if tool.name not in missing and not link.exists() and os.access(tool, os.X_OK):
                link.symlink_to(tool)
    return str(bin_dir)


def test_missing_uv_stops_setup_with_install_advice(tmp_path):
    destination = tmp_path / "project"
    env = {**os.environ, "PATH": path_without(tmp_path, "uv")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "copier",
            "copy",
            "--trust",
            "--defaults",
            "--vcs-ref",
            "HEAD",
            str(TEMPLATE),
            str(destination),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "lab2prod needs these tools on PATH, and they are missing:" in result.stderr
    assert "uv: install uv with `pip install uv`" in result.stderr
    assert not destination.exists()


@pytest.mark.parametrize("env_manager", ["uv", "conda"])
def test_setup_names_every_missing_tool(tmp_path, env_manager):
    solvers = ("micromamba", "mamba", "conda")
    result = subprocess.run(
        [
            sys.executable,
            str(TEMPLATE / "hooks" / "setup_project.py"),
            "--package",
            "demo",
            "--remote",
            "../storage",
            "--author",
            "Ada <ada@example.com>",
            "--env-manager",
            env_manager,
        ],
        cwd=tmp_path,
        env={**os.environ, "PATH": path_without(tmp_path, "git", "uv", *solvers)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "- git: install git" in result.stderr
    assert "- uv: install uv with `pip install uv`" in result.stderr
    # A conda project also needs a solver for conda-lock; a uv project does not.
    assert ("- conda: install micromamba" in result.stderr) == (env_manager == "conda")
    assert list(tmp_path.iterdir()) == [tmp_path / "bin"]
