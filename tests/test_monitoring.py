"""Monitoring a generated project of every task: drift, live performance, the `monitored` record.

Each project deploys a version, then three streams of scored rows arrive in three windows: a
clean one (with correct ground truth), one in which a single feature shifted, and a clean one
whose ground truth is wrong for a share of rows. `monitor` over each window must flag nothing,
exactly that feature, and performance.

The streams are written as inference-log files in the shared layout (interface 1), by a writer
local to this test, until the service's own logging is here to write them.
"""

from __future__ import annotations

import json
import shutil

import pytest
from projects import Project, local_registry, run
from test_serving import serving

# Run in the project: log three streams of the prepared data's rows, scored by the deployed
# version, into the registry's inference log, with ground truth for the first and third.
STREAMS = """
import json, sys, uuid
from datetime import datetime, timedelta, UTC
import numpy as np, pandas as pd
import pyarrow as pa, pyarrow.parquet as pq
from {package} import tasks
from {package}.contract import DateTime
from {package}.ops import science, settings
from {package}.ops.bundle import Bundle
from {package}.ops.registry import open_registry

config = settings.load()
registry = open_registry(config)
state = registry.state()
version = state.serving("production")
model = Bundle.open(registry.bundle(version, state)).load_model()
contract = science.contract()
target = contract.target
prepared = pd.concat(
    [pd.read_parquet(config.train_file), pd.read_parquet(config.holdout_file)], ignore_index=True
)
shifted = next(column.name for column in contract.features if column.kind == "number")
ROWS, PER_REQUEST, WRONG = 1000, 10, 0.4


def put(path, frame):
    registry.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with registry.fs.open(path, "wb") as handle:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), handle)


def stream(day, seed, shift=False, wrong=0.0, every=timedelta(minutes=3)):
    rng = np.random.default_rng(seed)
    rows = prepared.iloc[rng.integers(0, len(prepared), ROWS)].reset_index(drop=True)
    if shift:
        spread = prepared[shifted].astype("float64").std()
        rows[shifted] = rows[shifted].astype("float64") + spread
    answers = tasks.predict(model, contract.model_frame(rows), target.task)
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    ids = [uuid.UUID(int=int(rng.integers(2**63))).hex for _ in range(ROWS // PER_REQUEST)]
    log = pd.DataFrame({{
        "request_id": np.repeat(ids, PER_REQUEST),
        "row": np.tile(np.arange(PER_REQUEST, dtype="int32"), len(ids)),
        "time": pd.Series([start + every * i for i in range(ROWS)]).astype(
            "datetime64[us, UTC]"
        ),
        "version": np.full(ROWS, version, dtype="int32"),
        "source": "service",
        "status": np.full(ROWS, 200, dtype="int16"),
        "latency_ms": rng.uniform(2, 8, ROWS).astype("float32"),
    }})
    for column in contract.columns:
        values = rows[column.name]
        if isinstance(column, DateTime):
            values = values.dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
        log[f"input.{{column.name}}"] = values
    if answers.probabilities is None:
        log["prediction"] = answers.predicted.astype("float64")
    else:
        log["prediction"] = [str(label) for label in answers.predicted]
        for position, label in enumerate(answers.classes):
            log[f"probability.{{label}}"] = answers.probabilities[:, position]
    for day_of, part in log.groupby(log["time"].dt.strftime("%Y-%m-%d")):
        put(f"{{registry.root}}/inference/day={{day_of}}/version={{version}}/000000-{{seed:08x}}.parquet",
            part)
    if wrong is None:
        return
    actual = target.to_model(rows[target.name])
    flipped = rng.random(ROWS) < wrong
    if target.task.is_classification:
        classes = list(target.classes)
        actual = [str(classes[(classes.index(value) + 1) % len(classes)]) if flip else str(value)
                  for value, flip in zip(actual, flipped)]
    else:
        actual = np.where(flipped, actual + 3 * actual.std(), actual).astype("float64")
    feedback = pd.DataFrame({{
        "request_id": log["request_id"], "row": log["row"],
        "key": pd.Series([None] * ROWS, dtype="string"),
        "key_column": pd.Series([None] * ROWS, dtype="string"),
        "actual": actual,
        "received_at": pd.Series([start + timedelta(days=2)] * ROWS).astype("datetime64[us, UTC]"),
    }})
    put(f"{{registry.root}}/feedback/day={{day[:10]}}/000000-{{seed:08x}}.parquet", feedback)


if sys.argv[1:] == ["now"]:  # a shifted stream logged now, for a running service's gauges
    stream(datetime.now(UTC).isoformat(), 4, shift=True, wrong=None, every=timedelta(0))
else:
    stream("2026-03-02", 1)
    stream("2026-03-12", 2, shift=True, wrong=None)
    stream("2026-03-22", 3, wrong=WRONG)
print(json.dumps({{"feature": shifted, "version": version}}))
"""

WINDOWS = {"clean": "2026-03-07", "shifted": "2026-03-17", "wrong labels": "2026-03-27"}


def monitored_records(project: Project) -> list[dict]:
    log = local_registry(project) / project.package / "log"
    bodies = [json.loads(path.read_text())["body"] for path in sorted(log.glob("*.json"))]
    return [body for body in bodies if body["action"] == "monitored"]


@pytest.fixture(scope="module", params=["default", "multiclass", "regression"])
def watched(request, generated, tmp_path_factory) -> tuple[Project, dict]:
    """A project of the task with version 1 in production, the three streams logged, and what
    `monitor` answered over each window."""
    source = generated(request.param)
    path = tmp_path_factory.mktemp(f"monitor-{request.param}") / "project"
    run("git", "clone", "--quiet", source, path, cwd=path.parent)
    shutil.copytree(source / ".keys", path / ".keys")
    run("uv", "sync", "--locked", "--quiet", cwd=path)
    run("uv", "run", "dvc", "pull", "--quiet", cwd=path)
    project = Project(path, {})
    project.nox("retrain")
    project.ops("deploy", "--approved-by", "Ada Lovelace")
    python = path / ".venv" / "bin" / "python"
    streams = run(python, "-c", STREAMS.format(package=project.package), cwd=path).stdout
    seen = json.loads(streams.strip().splitlines()[-1])
    for name, end in WINDOWS.items():
        seen[name] = project.ops("monitor", "--end", end, check=False)
    seen["records"] = monitored_records(project)
    return project, seen


def test_a_clean_stream_flags_nothing(watched):
    _, seen = watched
    clean = seen["clean"]
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "monitor: nothing broke in production" in clean.stdout
    record = seen["records"][0]["details"]
    assert record["breaches"] == []
    figures = record["versions"][str(seen["version"])]
    assert (figures["requests"], figures["rows"], figures["errors"]) == (100, 1000, 0)
    assert figures["labelled_rows"] == 1000
    assert figures["live_metrics"] and figures["latency_ms"]["p99"] <= 8
    assert max(figures["drift"].values()) < 0.2


def test_a_shifted_feature_is_flagged_alone(watched):
    _, seen = watched
    shifted = seen["shifted"]
    assert shifted.returncode == 1, shifted.stdout + shifted.stderr
    breaches = seen["records"][1]["details"]["breaches"]
    drifted = [item["subject"] for item in breaches if item["kind"] == "input_drift"]
    assert drifted == [seen["feature"]]
    assert f"BREACH input_drift: {seen['feature']} of version" in shifted.stdout
    assert "nox -s retrain" in shifted.stdout
    assert not [item for item in breaches if item["kind"] == "performance"]


def test_wrong_ground_truth_flags_performance(watched):
    _, seen = watched
    wrong = seen["wrong labels"]
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    breaches = seen["records"][2]["details"]["breaches"]
    assert [item["kind"] for item in breaches] == ["performance"]
    assert "BREACH performance:" in wrong.stdout


def test_every_lifecycle_record_says_how_long_its_job_took(watched):
    project, _ = watched
    log = local_registry(project) / project.package / "log"
    bodies = [json.loads(path.read_text())["body"] for path in sorted(log.glob("*.json"))]
    timed = [body for body in bodies if body["action"] != "keys_changed"]
    assert [body["action"] for body in timed] == ["published", "promoted", *["monitored"] * 3]
    assert all(body["details"]["duration_seconds"] > 0 for body in timed)
    assert isinstance(timed[0]["details"]["stage_seconds"], dict)


def test_the_service_gauges_drift_since_it_loaded(watched):
    project, seen = watched
    python = project.path / ".venv" / "bin" / "python"
    script = STREAMS.format(package=project.package)
    with serving(project) as client:
        run(python, "-c", script, "now", cwd=project.path)
        status, text = client.call("/metrics")
    assert status == 200
    gauges = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line.startswith(("drift", "pred"))
    )
    # Only the rows logged after it loaded count: the three earlier streams do not.
    assert float(gauges["drift_rows"]) == 1000
    drifted = [
        name for name, value in gauges.items() if name.startswith("drift{") and float(value) > 0.2
    ]
    assert drifted == [f'drift{{feature="{seen["feature"]}"}}']
    assert float(gauges["prediction_drift"]) >= 0
