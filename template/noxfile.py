"""Every step of the project's life is a nox session: `uv run nox --list` shows them.

Each session installs exactly what uv.lock pins (`uv sync --locked`), so laptops, CI and
production run the same environment; nothing is resolved afresh. `uv run nox` runs the defaults.
"""

from __future__ import annotations

import json
from pathlib import Path

import nox

nox.needs_version = ">=2026.10.20"
nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["lint", "tests", "repro"]


def install_locked(session: nox.Session, *groups: str, project: bool = True) -> None:
    """Sync the session's environment to uv.lock: the project (unless told not to) and groups."""
    command = ["uv", "sync", "--locked", "--no-default-groups"]
    command += [option for group in groups for option in ("--group", group)]
    if not project:
        command.append("--no-install-project")
    session.run_install(
        *command, env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location}, silent=True
    )


@nox.session(venv_backend="none")
def lock(session: nox.Session) -> None:
    """Refresh uv.lock after editing pyproject.toml (`-- --upgrade` takes newer releases)."""
    session.run("uv", "lock", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint and check formatting with ruff, at the version in uv.lock."""
    install_locked(session, "lint", project=False)
    session.run("ruff", "check", *session.posargs)
    session.run("ruff", "format", "--check")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the unit tests."""
    install_locked(session, "test")
    session.run("pytest", *session.posargs)


@nox.session
def repro(session: nox.Session) -> None:
    """Run the DVC pipeline: rebuild whatever is out of date (`-- --force` rebuilds all)."""
    install_locked(session, "pipeline")
    session.run("dvc", "repro", *session.posargs)


@nox.session
def status(session: nox.Session) -> None:
    """Pull data from the DVC remote and fail if any pipeline stage is out of date."""
    install_locked(session, "pipeline")
    remote = dvc_output(session, "remote", "default")
    url = dvc_output(session, "config", f"remote.{remote}.url")
    if "://" not in url and not Path(url).is_dir():
        session.skip(
            f"the DVC remote '{remote}' is the directory {url}, which this machine does not "
            "have; configure a shared remote (see the README) to check the pipeline here"
        )
    session.run("dvc", "pull", "--quiet")
    stale = json.loads(dvc_output(session, "status", "--json") or "{}")
    if stale:
        session.error(f"pipeline stages are out of date, run `uv run dvc repro`: {stale}")
    session.log("every stage is up to date with its data, code and params")


def dvc_output(session: nox.Session, *arguments: str) -> str:
    """What a dvc command prints on stdout; its warnings still reach the terminal."""
    return session.run("dvc", *arguments, silent=True, stderr=None).strip()
