"""The template's own sessions: `uvx nox@2026.10.20 --list` shows them.

Sessions run in the template's environment, `.venv`, synced to uv.lock first, as in the projects
the template generates.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.needs_version = ">=2026.10.20"
nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).parent
DEMO = ROOT / "build" / "demo"


def locked(session: nox.Session, *command: str | Path, **options) -> str | bool:
    """Run a command in the template's .venv after syncing it to uv.lock."""
    session.run("uv", "sync", "--locked", "--quiet", "--project", str(ROOT))
    return session.run(
        "uv", "run", "--project", str(ROOT), "--no-sync", *map(str, command), **options
    )


def project_env() -> dict[str, str | None]:
    """Commands run inside a generated project see no virtualenv of ours (None unsets)."""
    return {"VIRTUAL_ENV": None, "PYTHONDONTWRITEBYTECODE": None}


def copy_template(session: nox.Session, destination: Path, *flags: str) -> None:
    """`copier copy` of this checkout, uncommitted changes included, with default answers."""
    if destination.exists():
        shutil.rmtree(destination)
    copy = ["copier", "copy", "--trust", "--defaults", "--vcs-ref", "HEAD", *flags]
    locked(session, *copy, ROOT, destination, env=project_env())


@nox.session
def tests(session: nox.Session) -> None:
    """Run the template's test suite (renders projects and runs their lifecycle)."""
    locked(session, "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff on the template's own Python and on a rendered project, with its own settings."""
    locked(session, "ruff", "check", *session.posargs)
    locked(session, "ruff", "format", "--check")
    rendered = Path(session.create_tmp()) / "lint-project"
    copy_template(session, rendered, "--quiet", "--skip-tasks")
    with session.chdir(rendered):
        locked(session, "ruff", "check", ".")
        locked(session, "ruff", "format", "--check", ".")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/, failing on any warning."""
    locked(session, "mkdocs", "build", "--strict")


@nox.session
def demo(session: nox.Session) -> None:
    """Generate a project with default answers into build/demo/ and run its lifecycle."""
    if DEMO.exists():
        shutil.rmtree(DEMO)  # the project, its DVC remote and its registry
    project = DEMO / "demo-project"
    copy_template(session, project)
    with session.chdir(project):
        for step in (
            ["nox"],  # lint, tests, repro
            ["dvc", "metrics", "show"],
            ["nox", "-s", "retrain"],
            ["nox", "-s", "deploy", "--", "--approved-by", "demo", "--reason", "first model"],
            ["nox", "-s", "audit"],
        ):
            session.run("uv", "run", "--locked", *step, env=project_env())
    session.log(f"the demo project is in {project}; its README says what to try next")


@nox.session
def bench(session: nox.Session) -> None:
    """Time generation, the pipeline, the lifecycle, serving against MLflow, batch scoring."""
    locked(session, "python", ROOT / "benchmarks" / "setup_times.py")
    locked(session, "python", ROOT / "benchmarks" / "lifecycle_times.py")
    if shutil.which("hey") is None:
        session.skip("the serving benchmark needs the load generator hey: apt-get install hey")
    # `-- --task multiclass` (or regression) measures that task's project instead.
    locked(session, "python", ROOT / "benchmarks" / "serving_times.py", *session.posargs)
