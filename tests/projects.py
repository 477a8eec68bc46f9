"""Render the template like a user would, and run commands in the generated projects."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import copier
import yaml
from plumbum import local

TEMPLATE = Path(__file__).resolve().parents[1]
# check-jsonschema and hadolint, installed beside the tests' Python.
TOOLS = Path(sys.executable).parent
CI_SCHEMAS = {"github": "vendor.github-workflows", "gitlab": "vendor.gitlab-ci"}

BUCKET = "lab2prod"
S3_ANSWERS = {"dvc_remote": f"s3://{BUCKET}/dvc", "registry": f"s3://{BUCKET}/registry"}

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
    "multiclass": {"task": "multiclass"},
    "regression": {"task": "regression"},
}


def project_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a user's shell: no virtualenv of ours leaking in, bytecode cached as
    Python does by default, and no DVC usage reports from tests."""
    ours = {"VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE"}
    env = {name: value for name, value in os.environ.items() if name not in ours}
    env["DVC_NO_ANALYTICS"] = "1"
    return env | (extra or {})


def run(
    *command: str | Path, cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command in a generated project; on failure, show everything it printed."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=project_env(env),
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


def render(
    destination: Path,
    answers: dict[str, Any],
    *,
    tasks: bool = True,
    env: dict[str, str] | None = None,
) -> Path:
    """`copier copy` of this checkout, including uncommitted changes (vcs_ref=HEAD)."""
    wanted = project_env(env)
    old_env = dict(os.environ)
    os.environ.clear()
    os.environ.update(wanted)
    # copier starts its tasks with plumbum's copy of the environment, taken at import.
    with local.env():
        for name in set(local.env.keys()) - set(wanted):
            del local.env[name]
        local.env.update(**wanted)
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


def ci_files(project: Path) -> dict[str, list[Path]]:
    """The CI files a project has, by provider."""
    gitlab = project / ".gitlab-ci.yml"
    return {
        "github": sorted((project / ".github" / "workflows").glob("*.yml")),
        "gitlab": [gitlab] if gitlab.exists() else [],
    }


def validate_ci(project: Path, provider: str) -> list[Path]:
    """The provider's CI files, after check-jsonschema passed them (and GitHub's setup action)."""
    paths = ci_files(project)[provider]
    assert paths, f"no {provider} CI file"
    run(TOOLS / "check-jsonschema", "--builtin-schema", CI_SCHEMAS[provider], *paths, cwd=project)
    if provider == "github":
        action = project / ".github" / "actions" / "setup" / "action.yml"
        run(TOOLS / "check-jsonschema", "--builtin-schema", "vendor.github-actions", action,
            cwd=project)  # fmt: skip
    return paths


def lint_dockerfile(project: Path) -> str:
    """The Dockerfile's text, after hadolint passed it clean and every file it copies from the
    build context was found among those .dockerignore lets through."""
    dockerfile = project / "Dockerfile"
    linted = run(TOOLS / "hadolint", "--failure-threshold", "info", dockerfile, cwd=project)
    assert linted.stdout == ""
    ignore = (project / ".dockerignore").read_text().splitlines()
    let_through = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    text = dockerfile.read_text()
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(word.startswith("--from") for word in words):
            sources = [word.rstrip("/") for word in words[1:-1] if not word.startswith("--")]
            assert set(sources) <= let_through, f"{line!r}: .dockerignore keeps it out"
    return text


def wait_for_port(port: int, seconds: float) -> None:
    """Until a server listens on 127.0.0.1:`port`, at most `seconds`; its own check follows."""
    for _ in range(int(seconds * 10)):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def s3_client(env: dict[str, str]):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


class Project:
    """A generated project and the environment its commands need (S3 credentials, say)."""

    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path = path
        self.env = env
        self.package = yaml.safe_load((path / ".copier-answers.yml").read_text())["package_name"]

    @property
    def process_env(self) -> dict[str, str]:
        """The whole environment for a subprocess started in the project."""
        return project_env(self.env)

    def nox(self, session: str, *arguments: str, check: bool = True):
        return run(
            "uv",
            "run",
            "--locked",
            "nox",
            "-s",
            session,
            "--",
            *arguments,
            cwd=self.path,
            env=self.env,
            check=check,
        )

    def cli(self, *arguments: str) -> list[str]:
        """The command line of the project's lifecycle CLI, run from its .venv."""
        python = self.path / ".venv" / "bin" / "python"
        return [str(python), "-m", f"{self.package}.ops.cli", *arguments]

    def ops(self, *arguments: str, check: bool = True, env: dict[str, str] | None = None):
        """The project's CLI straight from .venv, as nox would call it but without nox's start."""
        return run(
            *self.cli(*arguments),
            cwd=self.path,
            env=self.env | (env or {}),
            check=check,
        )

    def serving(self) -> int | None:
        """The production version, as the audit reports it."""
        tail = self.ops("audit").stdout.strip().splitlines()[-1]
        return int(tail.rsplit("version ", 1)[1]) if "production: version" in tail else None

    def add_rows(self, name: str, count: int, factor: float) -> None:
        """New raw data: the first rows of the example, measured `factor` times larger."""
        lines = (self.path / "data" / "raw" / "breast_cancer.csv").read_text().splitlines()
        rows = []
        for line in lines[1 : count + 1]:
            *features, target = line.split(",")
            rows.append(",".join([*(f"{float(v) * factor:.6g}" for v in features), target]))
        (self.path / "data" / "raw" / name).write_text("\n".join([lines[0], *rows]) + "\n")
        run("uv", "run", "dvc", "add", "data/raw", cwd=self.path, env=self.env)
        run("git", "add", "--all", cwd=self.path)
        run("git", "commit", "--quiet", "-m", f"Add {name}", cwd=self.path)


def live_story(project: Project) -> dict[str, object]:
    """generate -> retrain v1 -> deploy v1 -> new data -> retrain v2 -> deploy v2 -> rollback
    -> audit -> reproduce v1 and v2. Returns what each step printed and the states between."""
    seen: dict[str, object] = {}
    seen["retrain v1"] = project.nox("retrain").stdout
    seen["deploy v1"] = project.nox("deploy", "--approved-by", "Ada Lovelace").stdout
    seen["after deploy v1"] = project.serving()
    project.add_rows("april.csv", 60, 1.03)
    seen["retrain v2"] = project.nox("retrain").stdout
    seen["deploy v2"] = project.nox(
        "deploy", "--approved-by", "Grace Hopper", "--reason", "April data"
    ).stdout
    seen["after deploy v2"] = project.serving()
    seen["rollback"] = project.nox(
        "rollback", "--approved-by", "Ada Lovelace", "--reason", "complaints about April"
    ).stdout
    seen["after rollback"] = project.serving()
    seen["audit"] = project.nox("audit").stdout
    seen["reproduce v1"] = project.nox("reproduce", "--version", "1").stdout
    seen["reproduce v2"] = project.nox("reproduce", "--version", "2").stdout
    return seen


def local_registry(project: Project) -> Path:
    pyproject = tomllib.loads((project.path / "pyproject.toml").read_text())
    return (project.path / pyproject["tool"]["lab2prod"]["registry"]).resolve()


def change_bundle_byte_of(bundle: Path) -> None:
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01
    bundle.write_bytes(bytes(data))
