"""A generated project works as its README promises, for every answer set."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from projects import ci_files, lint_dockerfile, run, validate_ci

# Jinja left behind by a rendering mistake. GitHub's own `${{ ... }}` expressions are legitimate.
LEFTOVER_JINJA = re.compile(r"\{%|%\}|\{#|#\}|(?<!\$)\{\{")


def tracked_files(project: Path) -> list[str]:
    return run("git", "ls-files", cwd=project).stdout.splitlines()


def test_setup_leaves_one_clean_commit(project):
    assert run("git", "status", "--porcelain", cwd=project).stdout == ""
    subjects = run("git", "log", "--format=%s", cwd=project).stdout.splitlines()
    assert subjects == ["Start the project from the lab2prod template"]
    tracked = set(tracked_files(project))
    assert {"uv.lock", "dvc.lock", "data/raw.dvc", ".dvc/config", "reports/metrics.json"} <= tracked
    # Data and models live in DVC; git only has their hashes and DVC's ignore files.
    assert {path for path in tracked if path.startswith(("data/", "models/"))} == {
        "data/raw.dvc",
        "data/.gitignore",
        "models/.gitignore",
    }


def test_no_template_syntax_is_left(project):
    for relative in tracked_files(project):
        text = (project / relative).read_text(encoding="utf-8", errors="replace")
        match = LEFTOVER_JINJA.search(text)
        assert match is None, (
            f"{relative} still has template syntax: {text[match.start() - 40 :][:80]!r}"
        )


def test_answers_reach_the_project(project):
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    package = answers["package_name"]
    assert (project / "src" / package / "schema.py").is_file()
    assert f"python -m {package}.train" in (project / "dvc.yaml").read_text()
    assert (project / ".python-version").read_text().strip() == answers["python_version"]
    license_text = (project / "LICENSE").read_text()
    assert answers["author_name"] in license_text


def test_default_sessions_pass(project):
    result = run("uv", "run", "--locked", "nox", "-s", "lint", "tests", "repro", cwd=project)
    assert "Session lint was successful" in result.stderr
    assert "Session tests was successful" in result.stderr


def test_pre_commit_hooks_pass_without_changes(project):
    run("uv", "run", "--locked", "pre-commit", "run", "--all-files", cwd=project)
    assert run("git", "status", "--porcelain", cwd=project).stdout == ""


def test_second_repro_has_nothing_to_do(project):
    result = run("uv", "run", "--locked", "dvc", "repro", cwd=project)
    assert "Data and pipelines are up to date." in result.stdout
    assert json.loads(run("uv", "run", "dvc", "status", "--json", cwd=project).stdout) == {}


# Per task: a metric of the example's model and its floor (or ceiling), the example's rows, the
# holdout's size, and the plots that fit the task.
EXAMPLE_RESULTS = {
    "binary": ("roc_auc", 0.97, None, 569, 143, ["ROC curve", "Precision and recall", "Confusion"]),
    "multiclass": ("accuracy", 0.9, None, 178, 45, ["Confusion matrix"]),
    "regression": ("rmse", None, 70.0, 442, 111, ["Predicted against actual", "Residuals"]),
}


def test_metrics_and_plots_are_declared(project):
    task = yaml.safe_load((project / ".copier-answers.yml").read_text())["task"]
    metric, floor, ceiling, rows, holdout_rows, plots = EXAMPLE_RESULTS[task]
    shown = json.loads(run("uv", "run", "dvc", "metrics", "show", "--json", cwd=project).stdout)
    metrics = shown[""]["data"]["reports/metrics.json"]["data"]
    assert metrics[metric] >= (floor or -1e9) and metrics[metric] <= (ceiling or 1e9), metrics
    assert metrics["holdout_rows"] == holdout_rows
    quality = shown[""]["data"]["reports/prepare.json"]["data"]
    assert quality == {"rows_read": rows, "rows_rejected": 0, "rejected_share": 0.0}
    run("uv", "run", "dvc", "plots", "show", "--out", "dvc_plots", cwd=project)
    page = (project / "dvc_plots" / "index.html").read_text()
    assert all(title in page for title in plots), plots


def test_ci_files_match_the_answer_and_validate(project):
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    for provider, paths in ci_files(project).items():
        if provider != answers["ci_provider"]:
            assert paths == [], f"{provider} CI files for ci_provider={answers['ci_provider']}"
            continue
        validate_ci(project, provider)
        text = "\n".join(path.read_text() for path in paths)
        for session in (
            "check-lock",
            "lint",
            "tests",
            "status",
            "retrain",
            "deploy",
            "score",
            "monitor",
            "dashboard",
        ):
            assert f"nox@2026.10.20 -s {session}" in text
        if provider == "github":
            # Every job sets up the environment with the project's own action.
            assert text.count("uses: ./.github/actions/setup") == len(jobs(paths))
        # Deploy and rollback wait for a person: a protected environment that needs approval.
        deploy_jobs = [job for job in jobs(paths) if "-s deploy" in json.dumps(job)]
        assert deploy_jobs and all(job_needs_approval(provider, job) for job in deploy_jobs)


def jobs(paths: list[Path]) -> list[dict]:
    documents = [yaml.safe_load(path.read_text()) for path in paths]
    found = []
    for document in documents:
        candidates = document.get("jobs", document)
        found += [job for job in candidates.values() if isinstance(job, dict)]
    return found


def job_needs_approval(provider: str, job: dict) -> bool:
    if provider == "github":
        return job.get("environment") == "production"
    manual = any(rule.get("when") == "manual" for rule in job.get("rules", []))
    return manual and job.get("environment", {}).get("name") == "production"


def test_dockerfile_lints_clean(project):
    text = lint_dockerfile(project)
    # Built from the lock, run as a non-root user, checked by its health endpoint.
    assert "uv sync --locked" in text and "USER 10001" in text and "/health" in text


@pytest.mark.skipif(shutil.which("hey") is None, reason="needs the load generator hey")
def test_the_serving_benchmark_runs(generated):
    project = generated("default")
    # The peers install for minutes: the limit, the trivial app, stands for them here.
    quick = ("--seconds", "1", "--rows", "3000", "--skip-peers")
    run("uv", "run", "--locked", "nox", "-s", "bench", "--", *quick, cwd=project)
    figures = json.loads((project / "build" / "bench" / "serving.json").read_text())
    served = figures["servers"]["lab2prod"]
    assert served["c1"]["requests"] > 0 and served["c8"]["failed"] == 0
    assert figures["servers"]["trivial"]["c8"]["failed"] == 0
    assert set(figures["servers"]) == {"lab2prod", "trivial"}
    assert figures["targets"]["c8_over_trivial"] > 0
    assert figures["inference_log"]["off_requests_per_s"] > 0  # the service without its log
    assert figures["swaps"]["versions_served"] == [1, 2, 1] and figures["swaps"]["failed"] == 0
    assert [batch["rows"] for batch in figures["batch"]] == [3000]
    assert run("git", "status", "--porcelain", cwd=project).stdout == ""
