"""Bad answers and missing tools stop `copier copy` with a message that says what to do, and
leave nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
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
    ({"package_name": "tests"}, "'tests' would shadow a folder of the project"),
    (
        {"package_name": "json"},
        "'json' would shadow the module of Python's standard library; type another name, "
        "e.g. json_model",
    ),
    # Names that exist in only one of the supported Pythons are refused too.
    ({"package_name": "tomllib"}, "'tomllib' would shadow the module of Python's standard"),
    ({"package_name": "asyncore"}, "'asyncore' would shadow the module of Python's standard"),
    (
        {"package_name": "yaml"},
        "'yaml' would shadow the module of a library the project installs; type another name, "
        "e.g. yaml_model",
    ),
    ({"package_name": "sklearn"}, "'sklearn' would shadow the module of a library"),
    ({"package_name": "b" * 65}, "Type a package name of at most 64 characters (this one has 65)"),
    # The slug is made from the project name, and names folders such as ../<slug>-registry.
    ({"project_name": "Churn " * 20}, "Type a slug of at most 64 characters (this one, made"),
    ({"project_slug": "c" * 65}, "Validation error for question 'project_slug': Type a slug of"),
    ({"project_name": "Churn\nModel"}, "Type the project name on one line"),
    ({"description": "Churn\x7fmodel"}, "Type the description as one line of text"),
    ({"author_name": "Ada <ada@example.com>"}, "Type the name alone, on one line, without < >"),
    ({"author_name": "Ada\tLovelace"}, "Type the name alone"),
    ({"author_email": "ada@exam ple.com"}, "Type an email address such as ada@example.com"),
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
    ({"dvc_remote": "C:\\dvc"}, "Type the DVC remote without quotes, backslashes, backticks"),
    ({"dvc_remote": "../it's"}, "Type the DVC remote without quotes"),
    ({"dvc_remote": "../`date`"}, "Type the DVC remote without quotes"),
    # The registry lands in pyproject.toml: a quote would end its TOML string.
    (
        {"registry": '../registry" x'},
        "Validation error for question 'registry': Type the registry without quotes",
    ),
    ({"registry": "../registry\n"}, "Type the registry without quotes"),
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


def test_free_text_with_quotes_renders_valid_toml(tmp_path):
    answers = {
        "author_name": "Seán O'Brien",
        "description": 'Flags "risky" loans; a \\ is kept',
        "project_name": "O'Brien & Co",
    }
    destination = render(tmp_path / "project", answers, tasks=False)
    pyproject = tomllib.loads((destination / "pyproject.toml").read_text())
    project = pyproject["project"]
    assert project["authors"] == [{"name": "Seán O'Brien", "email": "se.n.o.brien@example.com"}]
    assert project["description"] == answers["description"]
    assert project["name"] == "o-brien-co"
    assert pyproject["tool"]["lab2prod"]["registry"] == "../o-brien-co-registry"
    assert "Seán O'Brien" in (destination / "LICENSE").read_text()


def test_the_longest_names_render(tmp_path):
    slug = "churn-" + "m" * 58
    destination = render(tmp_path / "project", {"project_slug": slug}, tasks=False)
    assert tomllib.loads((destination / "pyproject.toml").read_text())["project"]["name"] == slug
    assert (destination / "src" / slug.replace("-", "_")).is_dir()


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
