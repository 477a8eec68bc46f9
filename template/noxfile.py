"""Every step of the project's life is a nox session: `nox --list` shows them.

All sessions work in the project's one environment, first made exactly what the lock pins (a
no-op when it already is): `.venv` from uv.lock, or `.conda-env` from conda-lock.yml when the
project has an environment.yml. Laptops, CI and production run the same packages, and nothing is
resolved afresh. The two managers differ only in the two Environment classes below.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import tomllib
from pathlib import Path

import nox

nox.needs_version = ">=2026.10.20"
nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "tests", "repro"]

PACKAGE = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["uv"]["build-backend"][
    "module-name"
]


class UvEnvironment:
    """`.venv`, synced to uv.lock by uv."""

    def lock(self, session: nox.Session, *options: str) -> None:
        session.run("uv", "lock", *options)

    def check(self, session: nox.Session) -> None:
        session.run("uv", "lock", "--check")

    def sync(self, session: nox.Session) -> None:
        session.run("uv", "sync", "--locked", "--quiet")

    def run(self, session: nox.Session, *command: str, **options) -> str | bool:
        return session.run("uv", "run", "--no-sync", *command, **options)


class CondaEnvironment:
    """`.conda-env`, installed by conda-lock from conda-lock.yml, again whenever the lock changes.

    conda-lock runs at the version pinned here, with micromamba, mamba or conda (the first found)
    as its solver and installer. LAB2PROD_CONDA_LOCK_OPTIONS adds options to `conda-lock lock`,
    such as a mirror channel (`-c URL`).
    """

    conda_lock = ("uvx", "conda-lock@4.0.3")
    prefix = Path(".conda-env")
    bin_dir = prefix / ("Scripts" if os.name == "nt" else "bin")
    # Written into the environment once it matches the lock: which lock it was made from.
    stamp = prefix / "conda-meta" / "lab2prod-lock.sha256"

    def lock(self, session: nox.Session, *options: str) -> None:
        configured = shlex.split(os.environ.get("LAB2PROD_CONDA_LOCK_OPTIONS", ""))
        session.run(*self.conda_lock, "lock", "--conda", self.solver(session),
                    "--file", "environment.yml", "--lockfile", "conda-lock.yml",
                    *configured, *options)  # fmt: skip
        # The explicit linux-64 lock the Dockerfile installs with micromamba.
        session.run(*self.conda_lock, "render", "--kind", "explicit", "--platform", "linux-64",
                    "conda-lock.yml")  # fmt: skip

    def check(self, session: nox.Session) -> None:
        # conda-lock solves again only if environment.yml changed since the lock was made.
        before = Path("conda-lock.yml").read_bytes()
        self.lock(session, "--check-input-hash")
        if Path("conda-lock.yml").read_bytes() != before:
            session.error("conda-lock.yml was out of date with environment.yml: commit the new one")

    def sync(self, session: nox.Session) -> None:
        wanted = hashlib.sha256(Path("conda-lock.yml").read_bytes()).hexdigest()
        if self.stamp.is_file() and self.stamp.read_text() == wanted:
            return
        shutil.rmtree(self.prefix, ignore_errors=True)
        session.run(*self.conda_lock, "install", "--conda", self.solver(session),
                    "--prefix", str(self.prefix), "conda-lock.yml")  # fmt: skip
        # The project's own package, from src/ (its dependencies all come from the lock).
        self.run(session, "python", "-m", "pip", "install", "--quiet", "--no-deps",
                 "--no-build-isolation", "--editable", ".")  # fmt: skip
        self.stamp.write_text(wanted)

    def run(self, session: nox.Session, *command: str, **options) -> str | bool:
        bin_dir = str(self.bin_dir.resolve())
        env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               "CONDA_PREFIX": str(self.prefix.resolve()), **options.pop("env", {})}  # fmt: skip
        program = shutil.which(command[0], path=bin_dir) or command[0]
        return session.run(program, *command[1:], env=env, external=True, **options)

    def solver(self, session: nox.Session) -> str:
        for name in ("micromamba", "mamba", "conda"):
            if found := shutil.which(name):
                return found
        session.error(
            "conda-lock needs micromamba, mamba or conda on PATH: install micromamba "
            "(https://mamba.readthedocs.io/en/latest/installation/micromamba-installation.html)"
        )


ENVIRONMENT = CondaEnvironment() if Path("environment.yml").exists() else UvEnvironment()


def locked(session: nox.Session, *command: str, **options) -> str | bool:
    """Run a command in the project's environment after syncing it to the lock."""
    ENVIRONMENT.sync(session)
    return ENVIRONMENT.run(session, *command, **options)


@nox.session
def lock(session: nox.Session) -> None:
    """Refresh the lock after editing pyproject.toml or environment.yml (options go to the tool)."""
    ENVIRONMENT.lock(session, *session.posargs)


@nox.session(name="check-lock")
def check_lock(session: nox.Session) -> None:
    """Fail if the lock no longer matches what it was made from (pre-commit and CI run this)."""
    ENVIRONMENT.check(session)


@nox.session
def run(session: nox.Session) -> None:
    """Run any command in the project's environment: `nox -s run -- dvc pull`."""
    if not session.posargs:
        session.error("name the command to run after `--`, e.g. `nox -s run -- dvc pull`")
    locked(session, *session.posargs)


@nox.session
def env(session: nox.Session) -> None:
    """Make the project's environment exactly what the lock pins (every session does this)."""
    ENVIRONMENT.sync(session)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint and check formatting with ruff, at the locked version."""
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
        session.error(f"pipeline stages are out of date, run `nox -s repro`: {stale}")
    session.log("every stage is up to date with its data, code and params")


def ops(session: nox.Session, verb: str) -> None:
    """A lifecycle command of the project's CLI, with the session's arguments."""
    locked(session, "python", "-m", f"{PACKAGE}.ops.cli", verb, *session.posargs)


@nox.session
def schema(session: nox.Session) -> None:
    """Infer the input contract from data: `-- DATA_FILE --target COLUMN [--task T]`."""
    ops(session, "schema")


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
    """Verify the log's records, signatures, anchored head and bundles; print the history."""
    ops(session, "audit")


@nox.session
def keys(session: nox.Session) -> None:
    """List the trusted signing keys; `-- new --role publish|deploy [--print]`, `-- retire ID`."""
    ops(session, "keys")


@nox.session
def serve(session: nox.Session) -> None:
    """Serve the production version over HTTP on 127.0.0.1:8000 (`-- --help` for options)."""
    ops(session, "serve")


@nox.session
def score(session: nox.Session) -> None:
    """Batch-score with the production version: `-- INPUT OUTPUT [--stage S] [--engine dask]`."""
    ops(session, "score")


@nox.session
def sql(session: nox.Session) -> None:
    """One SQL query that scores a table in the database: `-- --dialect duckdb|postgres|...`."""
    ops(session, "sql")


@nox.session
def feedback(session: nox.Session) -> None:
    """Attach actual outcomes to logged predictions: `-- LABELS_FILE [--key COLUMN]`."""
    ops(session, "feedback")


@nox.session
def monitor(session: nox.Session) -> None:
    """Drift, live performance, volumes and job durations against params.yaml's thresholds."""
    ops(session, "monitor")


@nox.session
def bench(session: nox.Session) -> None:
    """Measure serving against its peers and the limit, batch scoring, swaps (needs `hey`)."""
    locked(session, "python", "benchmarks/serving.py", *session.posargs)


@nox.session
def reproduce(session: nox.Session) -> None:
    """Rebuild a version from its commit and data and compare: `-- --version N`."""
    ops(session, "reproduce")


@nox.session
def dashboard(session: nox.Session) -> None:
    """Write the model's dashboard, one HTML page: `-- [--output reports/dashboard.html]`."""
    ops(session, "dashboard")


@nox.session
def gc(session: nox.Session) -> None:
    """List what no recorded version needs (old bundles, logs, DVC cache); `-- --apply` removes."""
    ops(session, "gc")


def dvc_output(session: nox.Session, *arguments: str) -> str:
    """What a dvc command prints on stdout; its warnings still reach the terminal."""
    return locked(session, "dvc", *arguments, silent=True, stderr=None).strip()
