"""Every step of the project's life is a nox session: `uv run nox --list` shows them.

All sessions work in the project's one environment, `.venv`, first made exactly what uv.lock pins
(`uv sync --locked`, a no-op when it already is): laptops, CI and production run the same
packages, and nothing is resolved afresh. `uv run nox` runs the default sessions.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import nox

nox.needs_version = ">=2026.10.20"
nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "tests", "repro"]

PACKAGE = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["uv"]["build-backend"][
    "module-name"
]


def locked(session: nox.Session, *command: str, **options) -> str | bool:
    """Run a command in .venv after syncing it to uv.lock."""
    session.run("uv", "sync", "--locked", "--quiet")
    return session.run("uv", "run", "--no-sync", *command, **options)


@nox.session
def lock(session: nox.Session) -> None:
    """Refresh uv.lock after editing pyproject.toml (`-- --upgrade` takes newer releases)."""
    session.run("uv", "lock", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint and check formatting with ruff, at the version in uv.lock."""
    locked(session, "ruff", "check", *session.posargs)
    locked(session, "ruff", "format", "--check")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the unit tests."""
    locked(session, "pytest", *session.posargs)


@nox.session
def repro(session: nox.Session) -> None:
    """Run the DVC pipeline: rebuild whatever is out of date (`-- --force` rebuilds all)."""
    locked(session, "dvc", "repro", *session.posargs)


@nox.session
def status(session: nox.Session) -> None:
    """Pull data from the DVC remote and fail if any pipeline stage is out of date."""
    remote = dvc_output(session, "remote", "default")
    url = dvc_output(session, "config", f"remote.{remote}.url")
    if "://" not in url and not Path(url).is_dir():
        session.skip(
            f"the DVC remote '{remote}' is the directory {url}, which this machine does not "
            "have; configure a shared remote (see the README) to check the pipeline here"
        )
    locked(session, "dvc", "pull", "--quiet")
    stale = json.loads(dvc_output(session, "status", "--json") or "{}")
    if stale:
        session.error(f"pipeline stages are out of date, run `uv run dvc repro`: {stale}")
    session.log("every stage is up to date with its data, code and params")


def ops(session: nox.Session, verb: str) -> None:
    """A lifecycle command of the project's CLI, with the session's arguments."""
    locked(session, "python", "-m", f"{PACKAGE}.ops.cli", verb, *session.posargs)


@nox.session
def package(session: nox.Session) -> None:
    """Build a bundle of the current pipeline outputs (`-- --allow-dirty` for a test build)."""
    ops(session, "package")


@nox.session
def retrain(session: nox.Session) -> None:
    """Retrain on the current data, publish the version, run the deploy gate, write the report."""
    ops(session, "retrain")


@nox.session
def deploy(session: nox.Session) -> None:
    """Promote a version: `-- --approved-by NAME [--version N] [--stage S] [--reason TEXT]`."""
    ops(session, "deploy")


@nox.session
def rollback(session: nox.Session) -> None:
    """Return a stage to its previous version: `-- --approved-by NAME --reason TEXT`."""
    ops(session, "rollback")


@nox.session
def audit(session: nox.Session) -> None:
    """Verify the registry's audit log and bundles, and print the history."""
    ops(session, "audit")


@nox.session
def serve(session: nox.Session) -> None:
    """Serve the production version over HTTP on 127.0.0.1:8000 (`-- --help` for options)."""
    ops(session, "serve")


@nox.session
def score(session: nox.Session) -> None:
    """Batch-score a file with the production version: `-- INPUT OUTPUT [--stage S]`."""
    ops(session, "score")


@nox.session
def bench(session: nox.Session) -> None:
    """Measure serving against MLflow's server, batch scoring, swaps under load (needs `hey`)."""
    locked(session, "python", "benchmarks/serving.py", *session.posargs)


@nox.session
def reproduce(session: nox.Session) -> None:
    """Rebuild a version from its commit and data and compare: `-- --version N`."""
    ops(session, "reproduce")


def dvc_output(session: nox.Session, *arguments: str) -> str:
    """What a dvc command prints on stdout; its warnings still reach the terminal."""
    return locked(session, "dvc", *arguments, silent=True, stderr=None).strip()
