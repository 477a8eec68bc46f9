"""`copier update` brings a new template release into a project and leaves the team's files alone.

The template is copied into a scratch git repository with two tagged releases: v0.1.0 as this
checkout is, and v0.2.0 with a change to a lifecycle module (owned by the template) and to
params.yaml (owned by the team once generated).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import copier
import yaml
from projects import TEMPLATE, run

OWNED_BY_TEMPLATE = Path("template/src/{{ package_name }}/ops/cli.py")
OWNED_BY_TEAM = Path("template/params.yaml.jinja")


def git(*arguments: str, cwd: Path) -> str:
    identity = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]
    return run("git", *identity, *arguments, cwd=cwd).stdout


def template_release(repository: Path) -> Path:
    """This checkout's files, uncommitted changes included, committed and tagged v0.1.0."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=TEMPLATE,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in listed:
        source = TEMPLATE / name
        if source.is_file():
            (repository / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repository / name)
    git("init", "--quiet", "--initial-branch=main", cwd=repository)
    git("add", "--all", cwd=repository)
    git("commit", "--quiet", "-m", "v0.1.0", cwd=repository)
    git("tag", "v0.1.0", cwd=repository)
    return repository


def test_update_brings_template_changes_and_keeps_the_teams_files(tmp_path):
    template = template_release(tmp_path / "template")
    project = tmp_path / "project"
    copier.run_copy(
        str(template), project, defaults=True, unsafe=True, vcs_ref="v0.1.0", skip_tasks=True,
        quiet=True,
    )  # fmt: skip
    git("init", "--quiet", "--initial-branch=main", cwd=project)
    git("add", "--all", cwd=project)
    git("commit", "--quiet", "-m", "Start", cwd=project)
    # The team tunes a parameter.
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("max_iter: 1000", "max_iter: 2000"))
    git("commit", "--quiet", "-am", "Tune", cwd=project)

    # The next template release changes a lifecycle module and the default parameters.
    release_note = "# Changed in v0.2.0: the lifecycle commands.\n"
    cli = template / OWNED_BY_TEMPLATE
    cli.write_text(release_note + cli.read_text())
    defaults = template / OWNED_BY_TEAM
    defaults.write_text(defaults.read_text().replace("C: 1.0", "C: 0.5"))
    git("commit", "--quiet", "-am", "v0.2.0", cwd=template)
    git("tag", "v0.2.0", cwd=template)

    copier.run_update(
        project, defaults=True, overwrite=True, unsafe=True, skip_tasks=True, quiet=True
    )

    package = yaml.safe_load((project / ".copier-answers.yml").read_text())["package_name"]
    assert (project / "src" / package / "ops" / "cli.py").read_text().startswith(release_note)
    updated_params = params.read_text()
    assert "max_iter: 2000" in updated_params and "C: 0.5" not in updated_params
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == "v0.2.0"
