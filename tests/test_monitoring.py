"""Monitoring a generated project of every task: drift, live performance, the `monitored` record.

Each project deploys a version and serves it (one service, started once). Three streams of the
prepared data's rows reach it as real requests, one after another, each request naming its id: one
in which a single feature shifted, a clean one, and a clean one whose ground truth is wrong for a
share of rows; the actual outcomes come back through `feedback`. `monitor` over each stream's
window must flag exactly that feature, nothing, and performance.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from datetime import UTC, datetime, timedelta

import pytest
from projects import Project, local_registry, run
from test_dashboard import receiver  # noqa: F401 (a fixture)
from test_inference_log import port_of, post
from test_serving import Client, in_project, serving

ROWS, PER_REQUEST = 1000, 100
STREAMS = ("shifted", "clean", "wrong")  # the shifted one first: the gauges count since loading

# Run in the project with a folder: for each stream, the records a client sends (the prepared
# data's rows, drawn with replacement), and one file of the actual outcomes of the clean and the
# wrong streams by request id and row; prints the shifted feature and the serving version.
STREAM_FILES = """
import json, sys
from pathlib import Path
import numpy as np, pandas as pd
from {package}.ops import science, settings
from {package}.ops.registry import open_registry

config = settings.load()
contract = science.contract()
target = contract.target
prepared = pd.concat(
    [pd.read_parquet(config.train_file), pd.read_parquet(config.holdout_file)], ignore_index=True
)
shifted = next(column.name for column in contract.features if column.kind == "number")
folder = Path(sys.argv[1])
ROWS, PER_REQUEST, WRONG = {rows}, {per_request}, 0.4
labels = []
for name, seed, wrong in (("shifted", 2, None), ("clean", 1, 0.0), ("wrong", 3, WRONG)):
    rng = np.random.default_rng(seed)
    rows = prepared.iloc[rng.integers(0, len(prepared), ROWS)].reset_index(drop=True)
    if wrong is None:  # one standard deviation up: still within the contract's range
        spread = prepared[shifted].astype("float64").std()
        rows[shifted] = rows[shifted].astype("float64") + spread
    records = rows.drop(columns=target.name).to_json(orient="records", date_format="iso")
    (folder / f"{{name}}.json").write_text(records)
    if wrong is None:
        continue
    actual = target.to_model(rows[target.name])
    flipped = rng.random(ROWS) < wrong
    if target.task.is_classification:  # the next class
        classes = list(target.classes)
        actual = [classes[(classes.index(value) + 1) % len(classes)] if flip else value
                  for value, flip in zip(actual, flipped)]
    else:  # mirrored within the values seen: far off, still within the target's range
        actual = np.where(flipped, actual.max() + actual.min() - actual, actual)
    labels.append(pd.DataFrame({{
        "request_id": [f"{{name}}-{{n // PER_REQUEST}}" for n in range(ROWS)],
        "row": np.arange(ROWS) % PER_REQUEST,
        target.name: actual,
    }}))
pd.concat(labels).to_csv(folder / "labels.csv", index=False)
version = open_registry(config).state().serving("production")
print(json.dumps({{"feature": shifted, "version": version}}))
"""


def logged_rows(client: Client) -> float:
    metrics = client.call("/metrics")[1]
    return float(re.search(r"^inference_log_rows_total (\S+)$", metrics, re.MULTILINE)[1])


def send(client: Client, name: str, records: list[dict]) -> tuple[datetime, datetime]:
    """Send a stream in requests of PER_REQUEST records, each naming its id; the window from the
    first request to the last reply, which holds the times the service gave the stream's rows."""
    port, start = port_of(client), datetime.now(UTC)
    for number, first in enumerate(range(0, len(records), PER_REQUEST)):
        given = f"{name}-{number}"
        status, reply, request_id = post(port, records[first : first + PER_REQUEST], given)
        assert (status, request_id) == (200, given), reply
    return start, datetime.now(UTC)


def monitor_over(project: Project, window: tuple[datetime, datetime], env: dict | None = None):
    start, end = window
    days = (end - start) / timedelta(days=1)
    return project.ops("monitor", "--end", end.isoformat(), "--days", repr(days), check=False,
                       env=env)  # fmt: skip


def monitored_records(project: Project) -> list[dict]:
    log = local_registry(project) / project.package / "log"
    bodies = [json.loads(path.read_text())["body"] for path in sorted(log.glob("*.json"))]
    return [body for body in bodies if body["action"] == "monitored"]


@pytest.fixture(scope="module", params=["default", "multiclass", "regression"])
def watched(request, generated, tmp_path_factory) -> tuple[Project, dict]:
    """A project of the task with version 1 in production, the three streams served and their
    outcomes fed back, and what `monitor` answered over each stream's window."""
    source = generated(request.param)
    path = tmp_path_factory.mktemp(f"monitor-{request.param}") / "project"
    run("git", "clone", "--quiet", source, path, cwd=path.parent)
    shutil.copytree(source / ".keys", path / ".keys")
    run("uv", "sync", "--locked", "--quiet", cwd=path)
    run("uv", "run", "dvc", "pull", "--quiet", cwd=path)
    project = Project(path, {})
    project.nox("retrain")
    project.ops("deploy", "--approved-by", "Ada Lovelace")
    pyproject = path / "pyproject.toml"  # the service writes its log sooner: less to wait for
    pyproject.write_text(pyproject.read_text().replace(
        "inference-log-flush-seconds = 2", "inference-log-flush-seconds = 0.3"
    ))  # fmt: skip
    script = STREAM_FILES.format(package=project.package, rows=ROWS, per_request=PER_REQUEST)
    seen = json.loads(in_project(project, script, str(path.parent)))
    seen["windows"] = {}
    with serving(project) as client:
        for name in STREAMS:
            records = json.loads((path.parent / f"{name}.json").read_text())
            seen["windows"][name] = send(client, name, records)
            if name == "shifted":  # once the service wrote it
                deadline = time.monotonic() + 60
                while logged_rows(client) < ROWS:
                    assert time.monotonic() < deadline, "the service did not write its log"
                    time.sleep(0.2)
                seen["gauges"] = client.call("/metrics")[1]
    # Stopped, the service wrote what it had queued: the outcomes find their rows.
    fed = project.ops("feedback", str(path.parent / "labels.csv")).stdout
    assert f"{2 * ROWS} of {2 * ROWS} labels matched logged predictions" in fed
    for name, window in seen["windows"].items():
        seen[name] = monitor_over(project, window)
    seen["records"] = dict(zip(STREAMS, monitored_records(project), strict=True))
    return project, seen


def test_a_clean_stream_flags_nothing(watched):
    _, seen = watched
    clean = seen["clean"]
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "monitor: nothing broke in production" in clean.stdout
    record = seen["records"]["clean"]["details"]
    assert record["breaches"] == []
    figures = record["versions"][str(seen["version"])]
    assert (figures["requests"], figures["rows"], figures["errors"]) == (10, ROWS, 0)
    assert figures["labelled_rows"] == ROWS
    assert figures["live_metrics"]
    assert 0 < figures["latency_ms"]["p50"] <= figures["latency_ms"]["p99"]
    assert max(figures["drift"].values()) < 0.2


def test_a_shifted_feature_is_flagged_alone(watched):
    _, seen = watched
    shifted = seen["shifted"]
    assert shifted.returncode == 1, shifted.stdout + shifted.stderr
    breaches = seen["records"]["shifted"]["details"]["breaches"]
    drifted = [item["subject"] for item in breaches if item["kind"] == "input_drift"]
    assert drifted == [seen["feature"]]
    assert f"BREACH input_drift: {seen['feature']} of version" in shifted.stdout
    assert "nox -s retrain" in shifted.stdout
    assert not [item for item in breaches if item["kind"] == "performance"]


def test_wrong_ground_truth_flags_performance(watched):
    _, seen = watched
    wrong = seen["wrong"]
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    details = seen["records"]["wrong"]["details"]
    assert [item["kind"] for item in details["breaches"]] == ["performance"]
    assert details["versions"][str(seen["version"])]["labelled_rows"] == ROWS
    assert "BREACH performance:" in wrong.stdout


def test_every_lifecycle_record_says_how_long_its_job_took(watched):
    project, _ = watched
    log = local_registry(project) / project.package / "log"
    bodies = [json.loads(path.read_text())["body"] for path in sorted(log.glob("*.json"))]
    timed = [body for body in bodies if body["action"] != "keys_changed"]
    assert [body["action"] for body in timed[:5]] == ["published", "promoted", *["monitored"] * 3]
    assert all(body["details"]["duration_seconds"] > 0 for body in timed)
    assert isinstance(timed[0]["details"]["stage_seconds"], dict)


def test_the_service_gauges_drift_since_it_loaded(watched):
    _, seen = watched
    gauges = dict(
        line.rsplit(" ", 1)
        for line in seen["gauges"].splitlines()
        if line.startswith(("drift", "pred"))
    )
    # Read right after the shifted stream, the first rows it served.
    assert float(gauges["drift_rows"]) == ROWS
    drifted = [
        name for name, value in gauges.items() if name.startswith("drift{") and float(value) > 0.2
    ]
    assert drifted == [f'drift{{feature="{seen["feature"]}"}}']
    assert float(gauges["prediction_drift"]) >= 0


def test_a_breach_is_notified_to_a_webhook(watched, receiver):  # noqa: F811 (the fixture)
    project, seen = watched
    received, port = receiver
    env = {
        "LAB2PROD_WEBHOOK_URL": f"http://127.0.0.1:{port}/hook",
        "LAB2PROD_WEBHOOK_SECRET": "hook-secret",
    }
    shifted = monitor_over(project, seen["windows"]["shifted"], env)
    assert shifted.returncode == 1, shifted.stdout + shifted.stderr
    assert [event["event"] for event in received] == ["monitor_breach"]
    breaches = received[0]["figures"]["breaches"]
    assert {"kind": "input_drift", "subject": seen["feature"]}.items() <= breaches[0].items()
