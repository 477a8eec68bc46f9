"""The inference log of a generated project: every row the service or batch scoring scored, on
the registry's filesystem (a local directory, and S3 served by moto), and the actual outcomes
attached to it by request id or by a pass-through key column."""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from projects import Project, run
from test_serving import holdout_records, in_project, serving

IDENTITY = ("-c", "user.name=Test", "-c", "user.email=test@example.com")
EXCLUDED = "mean_radius"  # kept out of the log, as personal data would be
FLUSH_SECONDS = 2  # the project's inference-log-flush-seconds: what a crash may lose

READ = """
import json, sys
from {package}.ops import inference, science, settings
from {package}.ops.registry import Registry
config = settings.load()
fs, root = Registry.location(config.registry, config.model_name)
frame = inference.read(fs, root) if sys.argv[1] == "log" else inference.read_feedback(fs, root)
target = science.contract().target
print(json.dumps({{
    "rows": json.loads(frame.to_json(orient="records", date_format="iso", double_precision=15)),
    "columns": list(frame.columns),
    "target": target.name,
    "classes": [str(label) for label in target.classes],
}}))
"""


TO_PARQUET = "import sys, pandas as pd; pd.read_json(sys.argv[1]).to_parquet(sys.argv[2])"
PRINT_PARQUET = (
    "import sys, pandas as pd; print(pd.read_parquet(sys.argv[1]).to_json(orient='records'))"
)


def logged(project: Project, what: str = "log") -> dict:
    return json.loads(in_project(project, READ.format(package=project.package), what))


def post(port: int, body: object, request_id: str | None = None, json_type: bool = True):
    """(status, reply, X-Request-ID of the reply) of a POST /predict."""
    headers = {"content-type": "application/json" if json_type else "text/plain"}
    if request_id:
        headers["x-request-id"] = request_id
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict", json.dumps(body).encode(), headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response), response.headers["x-request-id"]
    except urllib.error.HTTPError as error:
        return error.code, json.load(error), error.headers["x-request-id"]


def port_of(client) -> int:
    return int(client.base.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def tracked(generated, tmp_path_factory) -> Project:
    """The default project, cloned, with a pass-through `patient_id` in its contract and a column
    excluded from the log, retrained and deployed."""
    source = generated("default")
    path = tmp_path_factory.mktemp("tracked") / "project"
    run("git", "clone", "--quiet", source, path, cwd=path.parent)
    shutil.copytree(source / ".keys", path / ".keys")
    run("uv", "sync", "--locked", "--quiet", cwd=path)
    run("uv", "run", "dvc", "pull", "--quiet", cwd=path)
    project = Project(path, {})
    schema = path / "src" / project.package / "schema.py"
    text = schema.read_text().replace("columns=(", 'columns=(\n        PassThrough("patient_id"),')
    text = re.sub(r"from \.contract import (.*)", r"from .contract import PassThrough, \1", text)
    schema.write_text(text)
    pyproject = path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(
        "inference-log-exclude = []", f'inference-log-exclude = ["{EXCLUDED}"]'
    ))  # fmt: skip
    raw = path / "data" / "raw" / "breast_cancer.csv"
    header, *lines = raw.read_text().splitlines()
    ids = [f"{line},P{number:04d}" for number, line in enumerate(lines)]
    raw.write_text("\n".join([f"{header},patient_id", *ids]) + "\n")
    run("uv", "run", "dvc", "add", "data/raw", cwd=path)
    run("git", "add", "--all", cwd=path)
    run("git", *IDENTITY, "commit", "--quiet", "-m", "Patient ids", cwd=path)
    project.nox("retrain")
    project.ops("deploy", "--approved-by", "Ada Lovelace")
    return project


def test_the_service_logs_every_row_it_scored_or_refused_and_feedback_attaches_outcomes(
    tracked, tmp_path
):
    project = tracked
    records = [record | {"patient_id": f"P{i:04d}"}
               for i, record in enumerate(holdout_records(project)[:90])]  # fmt: skip
    # Requests of one to three records, from four clients at once (the service scores them
    # together), half naming their request id.
    requests, start = [], 0
    for number in range(40):
        size = 1 + number % 3
        given = f"req-{number}" if number % 2 == 0 else None
        requests.append((records[start : start + size], given))
        start += size
    with serving(project) as client:
        port = port_of(client)
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda request: post(port, *request), requests))
        bad = records[0] | {"mean_texture": -3.0}
        refused = [post(port, bad, "bad-422"), post(port, records[0], "bad-415", json_type=False)]
        metrics = client.call("/metrics")[1]
    assert "inference_log_dropped_rows_total 0.0" in metrics

    assert [reply[0] for reply in replies] == [200] * len(requests)
    ids = [reply[2] for reply in replies]
    for (_, given), request_id in zip(requests, ids, strict=True):
        assert request_id == given if given else re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert len(set(ids)) == len(ids)
    assert [(status, request_id) for status, _, request_id in refused] == [
        (422, "bad-422"), (415, "bad-415"),
    ]  # fmt: skip

    # The server was stopped (SIGTERM): everything queued was written.
    log = logged(project)
    rows = {(row["request_id"], row["row"]): row for row in log["rows"]}
    assert len(rows) == len(log["rows"]) == start + len(refused)
    classes = log["classes"]
    contract_columns = ["patient_id", *(name for name in records[0] if name != "patient_id")]
    assert sorted(log["columns"]) == sorted(
        ["request_id", "row", "time", "version", "source", "status", "latency_ms",
         *(f"input.{name}" for name in contract_columns if name != EXCLUDED),
         "prediction", *(f"probability.{label}" for label in classes)]
    )  # fmt: skip
    version = project.serving()
    for (sent, _), (_, reply, request_id) in zip(requests, replies, strict=True):
        for position, (record, answer) in enumerate(zip(sent, reply["predictions"], strict=True)):
            row = rows[(request_id, position)]
            assert (row["version"], row["source"], row["status"]) == (version, "service", 200)
            assert row["latency_ms"] > 0
            assert row["input.patient_id"] == record["patient_id"]
            assert row["input.mean_texture"] == record["mean_texture"]
            assert row["prediction"] == str(answer["prediction"])
            assert {label: row[f"probability.{label}"] for label in classes} == pytest.approx(
                answer["probabilities"], abs=1e-12
            )
    for status, _, request_id in refused:
        row = rows[(request_id, 0)]
        assert row["status"] == status
        assert row["input.patient_id"] is None and row["prediction"] is None

    # Ground truth, by request id (and row) and by the patient id.
    target = log["target"]
    first, second = ids[0], ids[2]  # requests of one and three records
    by_id = tmp_path / "labels.csv"
    by_id.write_text(
        f"request_id,row,{target}\n{first},0,{classes[0]}\n{second},2,{classes[1]}\n"
        f"no-such-request,0,{classes[0]}\n"
    )
    result = project.ops("feedback", str(by_id))
    assert "2 of 3 labels matched logged predictions" in result.stdout
    by_key = tmp_path / "outcomes.csv"
    by_key.write_text(f"patient_id,outcome\nP0001,{classes[1]}\nP0002,{classes[0]}\n")
    result = project.ops("feedback", str(by_key), "--key", "patient_id", "--actual", "outcome")
    assert "2 of 2 labels matched" in result.stdout
    feedback = logged(project, "feedback")["rows"]
    assert sorted((r["request_id"], r["row"], r["key"], r["actual"]) for r in feedback) == sorted(
        [(first, 0, None, classes[0]), (second, 2, None, classes[1]),
         (ids[1], 0, "P0001", classes[1]), (ids[1], 1, "P0002", classes[0])]
    )  # fmt: skip

    unknown = tmp_path / "unknown.csv"
    unknown.write_text(f"request_id,{target}\nnobody,{classes[0]}\n")
    refused_file = project.ops("feedback", str(unknown), check=False)
    assert refused_file.returncode == 2
    assert "none of its 1 request ids match a logged request" in refused_file.stderr
    unknown.write_text(f"request_id,{target}\n{first},maybe\n")
    refused_value = project.ops("feedback", str(unknown), check=False)
    assert refused_value.returncode == 2
    assert f"row 1, {target}: " in refused_value.stderr
    assert "Traceback" not in refused_value.stderr + refused_file.stderr


def log_rows(project: Project) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for row in logged(project)["rows"]:
        rows.setdefault(row["request_id"], []).append(row)
    return rows


def test_a_killed_service_loses_at_most_the_flush_window_and_off_logs_nothing(tracked):
    project = tracked
    record = holdout_records(project)[0]
    with serving(project) as client:
        port = port_of(client)
        before = [post(port, record, f"before-{n}")[0] for n in range(10)]
        time.sleep(FLUSH_SECONDS + 1.5)  # past the flush interval (and the time a write takes)
        after = [post(port, record, f"after-{n}")[0] for n in range(10)]
        client.process.send_signal(signal.SIGKILL)
    assert before == after == [200] * 10
    rows = log_rows(project)
    assert {f"before-{n}" for n in range(10)} <= rows.keys()

    with serving(project, env={"LAB2PROD_INFERENCE_LOG": "off"}) as client:
        port = port_of(client)
        assert [post(port, record, f"off-{n}")[0] for n in range(5)] == [200] * 5
        assert "inference_log" not in client.call("/metrics")[1]
    assert not {f"off-{n}" for n in range(5)} & log_rows(project).keys()

    # A column to exclude that the contract does not have is named, before anything starts.
    pyproject = project.path / "pyproject.toml"
    kept = pyproject.read_text()
    try:
        pyproject.write_text(kept.replace(f'["{EXCLUDED}"]', '["mean_radius", "e_mail"]'))
        result = project.ops("serve", check=False)
    finally:
        pyproject.write_text(kept)
    assert result.returncode == 2
    assert "inference-log-exclude names e_mail, which the contract does not have" in result.stderr


def test_batch_scoring_logs_its_rows(lived, tmp_path):
    # Both registries, as test_lifecycle: a fixture param of its own would make pytest build the
    # S3 story twice, and the second on a bucket that already has the first one's log.
    project, _ = lived
    records = holdout_records(project)[:30]
    records[5]["mean_texture"] = -3.0  # rejected: not logged
    source, target = tmp_path / "input.json", tmp_path / "scored.parquet"
    source.write_text(json.dumps(records))
    parquet = tmp_path / "input.parquet"
    in_project(project, TO_PARQUET, str(source), str(parquet))
    result = project.ops("score", str(parquet), str(target), "--chunk-rows", "7")
    run_id = re.search(r"logged under request id ([0-9a-f]{32})", result.stdout)[1]
    rows = [row for row in logged(project)["rows"] if row["request_id"] == run_id]
    assert sorted(row["row"] for row in rows) == [n for n in range(30) if n != 5]
    version = project.serving()
    assert {(r["version"], r["source"], r["status"], r["latency_ms"]) for r in rows} == {
        (version, "batch", 200, None)
    }
    scored = json.loads(in_project(project, PRINT_PARQUET, str(target)))
    by_row = {row["row"]: row for row in rows}
    kept = [n for n in range(30) if n != 5]
    for position, output in zip(kept, scored, strict=True):
        assert by_row[position]["prediction"] == str(output["prediction"])
        assert by_row[position]["input.mean_texture"] == records[position]["mean_texture"]
