"""A team's own table through a generated project, as a new user would put it there.

The project for the table's task is cloned; its example data is replaced by the table, the
contract is inferred with `schema`, `example.py` is deleted, and then the whole lifecycle runs:
repro, retrain, deploy, serve, score, more data, retrain, deploy, rollback, audit, reproduce.
Nothing in ops/, dvc.yaml, the tests or the benchmark is edited, and the tests check that.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from projects import Project, run
from test_serving import (
    fuzz_finds_no_server_error,
    holdout_records,
    in_project,
    served_equals_pipeline,
    serving,
)

# table -> (the answer set of the project it goes in, the target, rows of the first and second
# delivery, what the team changes in params.yaml)
OWN_DATA = {
    "penguins": ("multiclass", "species", 600, 200, {}),
    "visits": ("regression", "spend", 20_000, 4_000, {}),
    # Loans are harder to tell apart than tumours: the team sets a gate that fits.
    "loans": ("default", "outcome", 3_000, 600, {"minimum: 0.97": "minimum: 0.7"}),
}
IDENTITY = ("-c", "user.name=Test", "-c", "user.email=test@example.com")
DATASETS = Path(__file__).with_name("datasets.py")


def git(project: Project, *arguments: str) -> str:
    return run("git", *IDENTITY, *arguments, cwd=project.path).stdout


def deliver(project: Project, table: str, part: int, rows: int) -> None:
    """A delivery of the team's data, tracked by DVC and committed."""
    python = project.path / ".venv" / "bin" / "python"
    target = project.path / "data" / "raw" / f"{table}-{part}.csv"
    run(python, DATASETS, table, target, str(rows), str(part), cwd=project.path)
    run("uv", "run", "dvc", "add", "data/raw", cwd=project.path)
    git(project, "add", "--all")


@pytest.fixture(scope="session", params=list(OWN_DATA))
def own(request, generated, tmp_path_factory) -> tuple[Project, dict[str, object]]:
    table = request.param
    answers, target, first, second, tuning = OWN_DATA[table]
    path = tmp_path_factory.mktemp(table) / "project"
    run("git", "clone", "--quiet", generated(answers), path, cwd=path.parent)
    # The team's private signing keys travel beside git, never in it.
    shutil.copytree(generated(answers) / ".keys", path / ".keys")
    run("uv", "sync", "--locked", "--quiet", cwd=path)
    run("uv", "run", "dvc", "pull", "--quiet", cwd=path)
    project = Project(path, {})
    # The example's model serves in production when the team brings its own data.
    seen: dict[str, object] = {"table": table, "retrain example": project.nox("retrain").stdout}
    project.ops("deploy", "--approved-by", "Ada Lovelace")
    seen["start"] = git(project, "rev-parse", "HEAD").strip()

    for old in (path / "data" / "raw").glob("*.csv"):
        old.unlink()
    deliver(project, table, 1, first)
    seen["schema"] = project.ops("schema", f"data/raw/{table}-1.csv", "--target", target).stdout
    git(project, "rm", "--quiet", f"src/{project.package}/example.py")
    params = path / "params.yaml"
    for old, new in tuning.items():
        params.write_text(params.read_text().replace(old, new))
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", "Our own data")
    seen["own data"] = git(project, "rev-parse", "HEAD").strip()

    seen["retrain v2"] = project.nox("retrain").stdout
    project.ops("deploy", "--approved-by", "Ada Lovelace")
    seen["after deploy v2"] = project.serving()
    deliver(project, table, 2, second)
    git(project, "commit", "--quiet", "-m", "Second delivery")
    seen["retrain v3"] = project.nox("retrain").stdout
    project.ops("deploy", "--approved-by", "Grace Hopper")
    seen["after deploy v3"] = project.serving()
    seen["rollback"] = project.ops(
        "rollback", "--approved-by", "Ada Lovelace", "--reason", "second delivery looks off"
    ).stdout
    seen["audit"] = project.ops("audit").stdout
    seen["reproduce v3"] = project.nox("reproduce", "--version", "3").stdout
    return project, seen


def test_the_whole_lifecycle_runs_on_the_teams_own_data(own):
    project, seen = own
    assert "Version 1 passed the deploy gate" in seen["retrain example"]
    # The example's model takes other columns: the gate says so and judges the candidate alone.
    assert "could not be scored on this holdout" in seen["retrain v2"]
    assert "Version 2 passed the deploy gate" in seen["retrain v2"]
    assert "package: serves model/model.onnx (onnxruntime" in seen["retrain v2"]
    assert "Version 3 passed the deploy gate" in seen["retrain v3"]
    assert "could not be scored" not in seen["retrain v3"]
    assert (seen["after deploy v2"], seen["after deploy v3"]) == (2, 3)
    assert "production rolled back from version 3 to 2" in seen["rollback"]
    assert "audit log verified: 7 records, 3 versions; production: version 2" in seen["audit"]
    assert "version 3 rebuilt from commit" in seen["reproduce v3"]
    assert "matches the registry" in seen["reproduce v3"]
    # The report speaks of the task's own metrics.
    report = (project.path / "reports" / "candidate.md").read_text()
    metric = {"penguins": "Log loss", "visits": "RMSE", "loans": "ROC AUC"}[seen["table"]]
    assert metric in report


def test_only_the_data_and_the_contract_were_changed(own):
    project, seen = own
    ours = git(project, "diff", "--name-status", seen["start"], seen["own data"]).splitlines()
    package = f"src/{project.package}"
    tuned = ["M\tparams.yaml"] if OWN_DATA[seen["table"]][4] else []
    assert sorted(ours) == sorted(
        ["M\tdata/raw.dvc", f"D\t{package}/example.py", f"M\t{package}/schema.py", *tuned]
    )
    # Nothing the template owns changed in the whole story (retrain commits dvc.lock and reports).
    changed = git(project, "diff", "--name-only", seen["start"], "HEAD").splitlines()
    template_owned = ("dvc.yaml", "tests/", "benchmarks/", f"{package}/ops/", "noxfile.py")
    assert not [path for path in changed if path.startswith(template_owned)], changed
    # What a newcomer runs: the contract explains each decision.
    assert "category:" in seen["schema"] or "date/time:" in seen["schema"]


def test_the_projects_own_checks_pass_on_the_new_data(own):
    project, _ = own
    result = run("uv", "run", "--locked", "nox", "-s", "lint", "tests", cwd=project.path)
    assert "Session tests was successful" in result.stderr


def test_served_answers_equal_the_pipeline(own):
    served_equals_pipeline(own[0])


CONTRACT_JSON = """
import json
from {package}.ops import science
print(json.dumps(science.contract().to_json()))
"""


def bad_values(column: dict) -> list[tuple[object, str]]:
    """(a JSON value the service must refuse, the same value as a CSV cell) for the column."""
    kind = column["kind"]
    bad: list[tuple[object, str]] = []
    if not column["nullable"] and kind != "pass-through":
        bad.append((None, ""))
    if kind in ("number", "integer"):
        bad.append(("abc", "abc"))
        if column["maximum"] is not None:
            too_big = column["maximum"] + abs(column["maximum"]) + 10
            bad.append((too_big, str(too_big)))
    if kind == "integer":
        bad.append((2.5, "2.5"))
    if kind == "boolean":
        bad.append(("maybe", "maybe"))
    if kind == "category":
        bad.append(("no such value", "no such value"))
    if kind == "datetime":
        bad.append(("not a date", "not a date"))
        bad.append(("1000-01-01", "1000-01-01"))
    return bad


def contract_kind(contract: dict, name: str) -> str:
    return next(column["kind"] for column in contract["columns"] if column["name"] == name)


def test_a_bad_value_of_every_kind_is_refused_naming_its_column(own, tmp_path):
    project, _ = own
    contract = json.loads(in_project(project, CONTRACT_JSON.format(package=project.package)))
    record = holdout_records(project)[0]
    cases = [
        (column["name"], value, cell)
        for column in contract["columns"]
        for value, cell in bad_values(column)
    ]
    # Every kind with rules is tried (text has only a length; ids have none).
    kinds = {column["kind"] for column in contract["columns"]} - {"text", "pass-through"}
    tried = {contract_kind(contract, name) for name, _, _ in cases}
    assert tried == kinds and len(cases) >= 2 * len(kinds) - 1
    with serving(project) as client:
        for name, value, _ in cases:
            status, reply = client.call("/predict", record | {name: value})
            assert status == 422, (name, value, reply)
            assert ["body", name] in [error["loc"] for error in reply["detail"]], (name, reply)
    # The same values as cells of a file: batch scoring rejects each row, naming its column.
    source = tmp_path / "input.csv"
    with source.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(record))
        writer.writeheader()
        writer.writerow({key: "" if value is None else value for key, value in record.items()})
        for name, _, cell in cases:
            row = {key: "" if value is None else value for key, value in record.items()}
            writer.writerow(row | {name: cell})
    scored = project.ops("score", str(source), str(tmp_path / "scored.csv")).stdout
    assert f"scored 1 of {len(cases) + 1} rows" in scored
    with (tmp_path / "scored.rejects.csv").open() as handle:
        rejects = list(csv.DictReader(handle))
    assert [reject["reason"].split(":")[0] for reject in rejects] == [name for name, _, _ in cases]


def test_fuzzing_the_service_finds_no_server_error(own, tmp_path):
    fuzz_finds_no_server_error(own[0], tmp_path, at_least=300)


def prepare(project: Project, work: Path, policy: str, share: float) -> subprocess.CompletedProcess:
    """The prepare stage on work/raw with the given invalid-rows policy."""
    (work / "params.yaml").write_text(
        "prepare:\n  holdout_fraction: 0.25\n  seed: 1\n"
        f"  invalid_rows: {policy}\n  max_rejected_share: {share}\n"
    )
    python = project.path / ".venv" / "bin" / "python"
    return run(python, "-m", f"{project.package}.data", "raw", "out", cwd=work, check=False)


def test_prepare_quarantines_bad_rows_with_their_line(own, tmp_path):
    """Row 2 holds a field quoted over two lines, so every later row starts a line further on."""
    project, _ = own
    contract = json.loads(in_project(project, CONTRACT_JSON.format(package=project.package)))
    columns = {column["name"]: column for column in contract["columns"]}
    text = next(name for name, c in columns.items() if c["kind"] in ("text", "category"))
    number = next(name for name, c in columns.items() if c["kind"] in ("number", "integer"))
    target = contract["target"]
    label = target["classes"][0] if target["classes"] else 10.0
    records = [record | {target["name"]: label} for record in holdout_records(project)[:40]]
    # Row 2: two lines of text (a category never holds a line break, so there it is refused).
    records[1][text] = "two\nlines"
    records[4][number] = "not a number"  # row 5: the record on line 7
    (tmp_path / "raw").mkdir()
    with (tmp_path / "raw" / "part.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in records)

    stopped = prepare(project, tmp_path, "stop", 0.5)
    assert stopped.returncode != 0
    first_bad = 3 if columns[text]["kind"] == "category" else 7
    assert f"raw/part.csv: line {first_bad}: " in stopped.stderr, stopped.stderr

    quarantined = prepare(project, tmp_path, "quarantine", 0.5)
    assert quarantined.returncode == 0, quarantined.stderr
    with (tmp_path / "out" / "rejects.csv").open() as handle:
        rejects = list(csv.DictReader(handle))
    lines = [int(reject["line"]) for reject in rejects]
    assert lines == ([3, 7] if first_bad == 3 else [7])
    assert rejects[-1]["reason"].startswith(f"{number}: not a ")
    quality = json.loads((tmp_path / "reports" / "prepare.json").read_text())
    assert quality["rows_read"] == 40 and quality["rows_rejected"] == len(rejects)

    strict = prepare(project, tmp_path, "quarantine", 0.01)
    assert strict.returncode != 0
    assert "broke the contract, more than prepare.max_rejected_share" in strict.stderr


@pytest.mark.skipif(shutil.which("hey") is None, reason="needs the load generator hey")
def test_the_serving_benchmark_runs_on_the_new_data(own):
    project, seen = own
    if OWN_DATA[seen["table"]][0] == "default":
        pytest.skip("a binary project's benchmark runs in test_generated_project")
    quick = ("--seconds", "1", "--rows", "3000", "--skip-peers", "--skip-trivial")
    project.nox("bench", *quick)
    figures = json.loads((project.path / "build" / "bench" / "serving.json").read_text())
    assert figures["servers"]["lab2prod"]["c8"]["failed"] == 0
    assert figures["swaps"]["failed"] == 0 and figures["batch"][0]["rows"] == 3000
