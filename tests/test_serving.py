"""The REST service of a generated project, as a real HTTP server on 127.0.0.1.

It serves the local-registry project after its lifecycle story, so the registry holds several
versions to deploy and roll back between while clients keep sending requests.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from projects import Project, change_bundle_byte_of, free_port, local_registry, run

pytestmark = pytest.mark.parametrize("lived", ["local"], indirect=True)


class Client:
    def __init__(self, port: int, token: str | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def call(self, path: str, body: object = None, raw: bytes | None = None) -> tuple[int, object]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"content-type": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            payload, status = error.read(), error.code
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode()


@contextmanager
def serving(
    project: Project,
    *arguments: str,
    env: dict[str, str] | None = None,
    program: list[str] | None = None,
    cwd: Path | None = None,
) -> Iterator[Client]:
    """A server on a free port: `cli serve` by default, or another program taking --port."""
    port = free_port()
    program = program or project.cli("serve", "--poll-seconds", "0.2")
    server = subprocess.Popen(
        [*program, "--port", str(port), *arguments],
        cwd=cwd or project.path,
        env=project.process_env | (env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = Client(port, (env or {}).get("LAB2PROD_TOKEN"))
    client.process = server  # what it printed can be read once it stopped
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert server.poll() is None, f"the service stopped:\n{server.stdout.read()}"
            try:
                if client.call("/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        yield client
    finally:
        server.terminate()
        server.wait(timeout=20)


# The holdout's rows as a client sends them (JSON, the target left out).
HOLDOUT_RECORDS = """
import pandas as pd
from {package}.ops import science, settings
frame = pd.read_parquet(settings.load().holdout_file).drop(columns=science.contract().target.name)
print(frame.to_json(orient="records", date_format="iso"))
"""


def holdout_records(project: Project) -> list[dict]:
    return json.loads(in_project(project, HOLDOUT_RECORDS.format(package=project.package)))


# Appended to a script that has `config` and `model`: the model's answers on the holdout, as the
# service words them (each class's probability, or the value).
PRINT_ANSWERS = """
from {package} import tasks
contract = science.contract()
holdout = pd.read_parquet(config.holdout_file)
answers = tasks.predict(model, contract.model_frame(holdout), contract.target.task)
probabilities = (
    None if answers.probabilities is None
    else [dict(zip(map(str, answers.classes), row)) for row in answers.probabilities.tolist()]
)
print(json.dumps([answers.predicted.tolist(), probabilities]))
"""
PIPELINE_PREDICTIONS = (
    """
import json, sys
import pandas as pd
from {package}.ops import science, settings
from {package}.ops.bundle import Bundle
from {package}.ops.registry import open_registry

config = settings.load()
registry = open_registry(config)
model = Bundle.open(registry.bundle(int(sys.argv[1]))).load_model()
"""
    + PRINT_ANSWERS
)


def in_project(project: Project, script: str, *arguments: str) -> str:
    """The output of a Python script run in the project's environment (its tools on PATH)."""
    bin_dir = project.path / ".venv" / "bin"
    env = project.env | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return run(bin_dir / "python", "-c", script, *arguments, cwd=project.path, env=env).stdout


def assert_same_answers(reply: dict, labels: list, probabilities: list | None) -> None:
    """The service's answers equal the pipeline's: labels exactly, probabilities (or regression
    values, relative to their size) within the compiled model's proven tolerance."""
    predictions = reply["predictions"]
    if probabilities is None:
        served = [p["prediction"] for p in predictions]
        assert served == pytest.approx(labels, rel=1e-9, abs=1e-9)
        return
    assert [p["prediction"] for p in predictions] == labels
    for served, expected in zip(predictions, probabilities, strict=True):
        assert served["probabilities"].keys() == expected.keys()
        assert served["probabilities"] == pytest.approx(expected, abs=1e-9)


def served_equals_pipeline(project: Project) -> None:
    version = project.serving()
    script = PIPELINE_PREDICTIONS.format(package=project.package)
    labels, probabilities = json.loads(in_project(project, script, str(version)))
    records = holdout_records(project)
    with serving(project) as client:
        # The compiled model answers; it was proven against the pipeline to this tolerance.
        assert client.call("/version")[1]["runtime"].startswith("onnxruntime ")
        for start in range(0, len(records), 1000):  # a request takes at most 1,000 records
            end = start + 1000
            status, reply = client.call("/predict", records[start:end])
            assert status == 200
            assert reply["model_version"] == version
            assert_same_answers(
                reply, labels[start:end], probabilities and probabilities[start:end]
            )
        single_status, single = client.call("/predict", records[0])
        assert single_status == 200
        assert_same_answers(single, labels[:1], probabilities and probabilities[:1])


def test_served_predictions_equal_the_pipeline(lived):
    served_equals_pipeline(lived[0])


BAD_REQUESTS = [
    (
        "missing field",
        lambda r: {k: v for k, v in r.items() if k != "mean_area"},
        422,
        ["body", "mean_area"],
    ),
    ("wrong type", lambda r: r | {"mean_radius": "12.5"}, 422, ["body", "mean_radius"]),
    ("out of range", lambda r: r | {"worst_area": 1e7}, 422, ["body", "worst_area"]),
    ("unknown field", lambda r: r | {"patient_age": 40}, 422, ["body", "patient_age"]),
    (
        "bad row in a list",
        lambda r: [r, r | {"mean_texture": -3}],
        422,
        ["body", 1, "mean_texture"],
    ),
]


def test_bad_requests_name_the_field_and_the_service_stays_up(lived):
    project, _ = lived
    record = holdout_records(project)[0]
    with serving(project) as client:
        for name, corrupt, status, location in BAD_REQUESTS:
            got, reply = client.call("/predict", corrupt(record))
            assert got == status, name
            assert location in [error["loc"] for error in reply["detail"]], (name, reply)
        assert client.call("/predict", raw=b"{not json")[0] == 400
        oversized = client.call("/predict", raw=b"[" + b" " * 2_000_000 + b"]")
        assert oversized[0] == 413 and "at most" in oversized[1]["detail"]
        assert client.call("/predict", [])[0] == 422
        assert client.call("/health") == (200, {"status": "ok"})
        assert client.call("/predict", record)[0] == 200


def exchange(port: int, request: bytes) -> bytes:
    """What the service sends back for raw bytes, until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        return b"".join(iter(lambda: connection.recv(65536), b""))


def answered_and_kept_open(port: int) -> http.client.HTTPConnection:
    """A kept-alive connection on which /health was answered."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/health")
    response = connection.getresponse()
    assert response.status == 200 and response.read() == b'{"status":"ok"}'
    return connection


def test_a_body_not_declared_as_json_is_refused(lived):
    project, _ = lived
    body = json.dumps(holdout_records(project)[0]).encode()
    with serving(project) as client:
        port = int(client.base.rsplit(":", 1)[1])
        for content_type, status, detail in [
            (b"text/plain", 415, b"declared as text/plain: send the records as JSON, with the "),
            (b"multipart/form-data; boundary=x", 415, b"declared as multipart/form-data: "),
            (b"application/json; charset=utf-16", 415, b"JSON must be sent in UTF-8, not utf-16"),
            (None, 415, b"no Content-Type: send the records as JSON, with the header "),
            (b"Application/JSON; charset=UTF-8", 200, b'"predictions"'),
            (b"application/vnd.api+json", 200, b'"predictions"'),
        ]:
            header = b"" if content_type is None else b"Content-Type: " + content_type + b"\r\n"
            reply = exchange(
                port,
                b"POST /predict HTTP/1.1\r\nHost: service\r\nConnection: close\r\n"
                + header
                + b"Content-Length: %d\r\n\r\n" % len(body)
                + body,
            )
            assert reply.startswith(b"HTTP/1.1 %d " % status), (content_type, reply)
            assert detail in reply, reply


def test_nan_and_infinity_are_named_as_what_they_are(lived):
    project, _ = lived
    record = json.dumps(holdout_records(project)[0] | {"mean_radius": 1.0})
    with serving(project) as client:
        for literal in ("NaN", "Infinity", "-Infinity"):
            sent = record.replace('"mean_radius": 1.0', f'"mean_radius": {literal}').encode()
            status, reply = client.call("/predict", raw=sent)
            assert status == 422
            assert reply["detail"] == [
                {
                    "loc": ["body", "mean_radius"],
                    "msg": f"{literal} is not a number this model accepts; "
                    "this field needs a value",
                    "type": "finite_number",
                }
            ]
    # Whatever the column's kind, bounded or not, and where a missing value may be sent.
    script = NOT_FINITE.format(package=project.package)
    assert json.loads(in_project(project, script)) == [
        "NaN is not a number this model accepts; this field needs a value",
        "Infinity is not a number this model accepts; this field needs a value",
        "NaN is not a number this model accepts; send null for a missing value",
    ]


NOT_FINITE = """
import json
from {package}.contract import Contract, Integer, Numeric, Target, Task
from {package}.ops.serve import Refusal, RequestModel, parse_records

columns = (Integer("visits", maximum=60), Numeric("weight", nullable=True, maximum=60))
request = RequestModel.of(Contract(columns=columns, target=Target(name="y", task=Task.REGRESSION)))
messages = []
for body in (b'{{"visits": NaN}}', b'{{"visits": 1e400}}', b'{{"visits": 3, "weight": NaN}}'):
    try:
        parse_records(body, request)
    except Refusal as refusal:
        messages += [error["msg"] for error in refusal.detail]
print(json.dumps(messages))
"""


def test_slow_clients_are_cut_off_and_others_still_served(lived):
    project, _ = lived
    record = holdout_records(project)[0]
    body = json.dumps(record).encode()
    deadlines = {"LAB2PROD_HEADER_TIMEOUT": "1", "LAB2PROD_BODY_TIMEOUT": "1"}
    with serving(project, env=deadlines) as client:
        port = int(client.base.rsplit(":", 1)[1])
        slow = []
        for number in range(300):
            connection = socket.create_connection(("127.0.0.1", port), timeout=30)
            # Half a request line, half the headers, or nothing at all, and then nothing more.
            connection.sendall(
                [b"POST /pred", b"POST /predict HTTP/1.1\r\nHost: s", b""][number % 3]
            )
            slow.append(connection)
        assert client.call("/predict", record)[0] == 200
        # The service closes each of them; a recv that times out instead fails the test.
        assert {connection.recv(1024) for connection in slow} == {b""}
        for connection in slow:
            connection.close()
        stalled = exchange(
            port,
            b"POST /predict HTTP/1.1\r\nHost: s\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body[:10],
        )
        assert stalled.startswith(b"HTTP/1.1 408 "), stalled
        assert b"connection: close" in stalled and b"the request body stalled" in stalled
        # After a reply on a kept-alive connection, a stalled next request is cut off as well.
        kept = answered_and_kept_open(port)
        kept.sock.sendall(b"GET /hea")
        assert kept.sock.recv(1024) == b""
        kept.close()
        assert client.call("/predict", record)[0] == 200


def test_requests_beyond_the_connection_limit_get_503(lived):
    project, _ = lived
    with serving(project, env={"LAB2PROD_MAX_CONNECTIONS": "4"}) as client:
        port = int(client.base.rsplit(":", 1)[1])
        # Connections the service has surely taken, now sending their next request slowly.
        held = [answered_and_kept_open(port) for _ in range(3)]
        for connection in held:
            connection.sock.sendall(b"GET /hea")
        assert client.call("/health")[0] == 503
        for connection in held:
            connection.close()


def test_beyond_loopback_the_service_wants_a_token(lived):
    project, _ = lived
    refused = subprocess.run(
        project.cli("serve", "--host", "0.0.0.0", "--port", str(free_port())),
        cwd=project.path,
        env=project.process_env,
        capture_output=True,
        text=True,
        timeout=120,  # a service that started instead would never end
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "serve: refused: 0.0.0.0 is reachable from other machines and LAB2PROD_TOKEN is not set; "
        "set it, or pass --allow-no-token (LAB2PROD_ALLOW_NO_TOKEN=1) if a proxy in front "
        "authenticates every request"
    ]
    record = holdout_records(project)[0]
    with serving(project, "--host", "0.0.0.0", env={"LAB2PROD_ALLOW_NO_TOKEN": "1"}) as client:
        assert client.call("/predict", record)[0] == 200
    assert "WARNING: serving on 0.0.0.0 without LAB2PROD_TOKEN" in client.process.stdout.read()


def test_the_openapi_document_says_which_answers_to_expect(lived):
    project, _ = lived
    # With a token the service may listen beyond loopback.
    with serving(project, "--host", "0.0.0.0", env={"LAB2PROD_TOKEN": "s3cret"}) as client:
        status, document = client.call("/openapi.json")
    assert status == 200
    operations = {
        path: operation
        for path, methods in document["paths"].items()
        for operation in methods.values()
    }
    for path in ("/predict", "/version", "/metrics"):
        assert "401" in operations[path]["responses"] and operations[path]["security"], path
    for path in ("/health", "/ready"):
        assert "401" not in operations[path]["responses"] and "security" not in operations[path]
    assert {"408", "415"} <= set(operations["/predict"]["responses"])
    assert list(operations["/metrics"]["responses"]["200"]["content"]) == ["text/plain"]


def test_a_token_guards_everything_but_health(lived):
    project, _ = lived
    record = holdout_records(project)[0]
    with serving(project, env={"LAB2PROD_TOKEN": "s3cret"}) as client:
        assert client.call("/predict", record)[0] == 200
        assert client.call("/version")[0] == 200
        anonymous = Client(int(client.base.rsplit(":", 1)[1]))
        assert anonymous.call("/predict", record)[0] == 401
        assert anonymous.call("/metrics")[0] == 401
        assert Client(int(client.base.rsplit(":", 1)[1]), "wrong").call("/version")[0] == 401
        assert anonymous.call("/health")[0] == 200


def test_version_ready_and_metrics(lived):
    project, _ = lived
    record = holdout_records(project)[0]
    with serving(project) as client:
        assert client.call("/ready")[1]["model_version"] == project.serving()
        version = client.call("/version")[1]
        assert set(version) >= {"model_version", "git_commit", "data_hashes", "trained_at"}
        for _ in range(3):
            client.call("/predict", record)
        client.call("/predict", record | {"mean_radius": -1})
        status, text = client.call("/metrics")
        assert status == 200
        assert 'requests_total{path="/predict",status="200"} 3.0' in text
        assert 'requests_total{path="/predict",status="422"} 1.0' in text
        assert 'request_seconds_bucket{le="0.005",path="/predict"}' in text
        assert f"serving_version {float(project.serving())}" in text


def test_deploy_and_rollback_swap_the_model_without_failing_a_request(lived):
    project, _ = lived
    record = holdout_records(project)[0]
    start = project.serving()
    other = 1 if start != 1 else 2
    versions: Counter[int] = Counter()
    failures: list[object] = []
    stop = threading.Event()

    def keep_asking(client: Client) -> None:
        while not stop.is_set():
            status, reply = client.call("/predict", record)
            if status == 200:
                versions[reply["model_version"]] += 1
            else:
                failures.append((status, reply))

    with serving(project) as client:
        clients = [threading.Thread(target=keep_asking, args=(client,)) for _ in range(8)]
        for thread in clients:
            thread.start()
        try:
            project.ops("deploy", "--version", str(other), "--approved-by", "swap-test")
            wait_for_version(client, other)
            project.ops("rollback", "--approved-by", "swap-test", "--reason", "swap test")
            wait_for_version(client, start)
        finally:
            stop.set()
            for thread in clients:
                thread.join()
    assert failures == []
    assert versions[start] > 0 and versions[other] > 0


def wait_for_version(client: Client, version: int) -> None:
    deadline = time.monotonic() + 30
    while client.call("/version")[1]["model_version"] != version:
        assert time.monotonic() < deadline, f"the service never took version {version}"
        time.sleep(0.1)
    time.sleep(0.5)  # keep the load on the new model for a while


def test_a_tampered_bundle_is_refused(lived, tmp_path):
    project, _ = lived
    copy = tmp_path / "registry"
    shutil.copytree(local_registry(project), copy)
    for bundle in (copy / project.package / "bundles").glob("*.zip"):
        change_bundle_byte_of(bundle)
    refused = project.ops(
        "serve", "--port", str(free_port()), check=False, env={"LAB2PROD_REGISTRY": str(copy)}
    )
    assert refused.returncode == 2
    assert "does not match its sha256 in the registry" in refused.stderr


def test_an_empty_stage_is_refused_with_advice(lived, tmp_path):
    project, _ = lived
    refused = project.ops("serve", "--stage", "staging-eu", "--port", str(free_port()), check=False)
    assert refused.returncode == 2
    assert "no version serves in staging-eu: run `nox -s retrain`" in refused.stderr
    empty = project.ops(
        "serve",
        "--port",
        str(free_port()),
        check=False,
        env={"LAB2PROD_REGISTRY": str(tmp_path / "empty")},
    )
    assert "no version serves in production" in empty.stderr


def test_a_bundle_file_is_served_as_it_is(lived):
    project, _ = lived
    bundle = next(Path(local_registry(project) / project.package / "bundles").glob("*.zip"))
    with serving(project, "--bundle", str(bundle)) as client:
        status, reply = client.call("/predict", holdout_records(project)[0])
        assert status == 200 and reply["model_version"] is None


# Three pipelines, two of which must not be served compiled: one with a function that has no ONNX
# form, one whose function's ONNX form answers differently (the identity instead of log1p).
COMPILE_REFUSALS = """
import json
import numpy as np, pandas as pd
from skl2onnx.algebra.onnx_ops import OnnxIdentity
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from {package} import params
from {package}.ops import compiled, science, settings
from {package}.train import build_pipeline

config = settings.load()
contract = science.contract()
train = pd.read_parquet(config.holdout_file.parent / "train.parquet")
holdout = pd.read_parquet(config.holdout_file)

def fitted(*steps):
    pipeline = build_pipeline(params.load("train"))
    pipeline.steps[1:1] = list(steps)
    target = contract.target
    return pipeline.fit(contract.model_frame(train), target.to_model(train[target.name]))

def log1p(x):
    return np.log1p(np.abs(x))

outcomes = {{"translated": compiled.compile_pipeline(fitted(), contract, holdout)}}
untranslated = fitted(("log", FunctionTransformer(log1p)))
outcomes["untranslated"] = compiled.compile_pipeline(untranslated, contract, holdout)
log1p.onnx_translation = lambda x, opset: OnnxIdentity(x, op_version=opset)
outcomes["mistranslated"] = compiled.compile_pipeline(untranslated, contract, holdout)
print(json.dumps({{name: [onnx is not None, entry] for name, (onnx, entry) in outcomes.items()}}))
"""


def test_only_a_compiled_model_that_answers_as_the_pipeline_is_served(lived):
    project, _ = lived
    outcomes = json.loads(in_project(project, COMPILE_REFUSALS.format(package=project.package)))
    compiled, entry = outcomes["translated"]
    assert compiled and entry["member"] == "model/model.onnx"
    assert entry["parity"]["labels_equal"] and entry["parity"]["max_probability_difference"] < 1e-9
    compiled, entry = outcomes["untranslated"]
    assert not compiled and entry["member"] == "model/model.joblib"
    assert "FunctionTransformer(log1p) has no ONNX form" in entry["reason"]
    compiled, entry = outcomes["mistranslated"]
    assert not compiled and entry["reason"] == "the ONNX model did not answer as the pipeline does"
    assert entry["parity"]["max_probability_difference"] > 1e-3


# A bundle of the current pipeline made where the compiler fails, and the pipeline's own answers.
UNCOMPILED_BUNDLE = (
    """
import json, sys
from pathlib import Path
import joblib, pandas as pd
from {package}.ops import bundle, compiled, science, settings, signing

def no_converter(*arguments):
    raise RuntimeError("no converter for this step")

config = settings.load()
compiled.to_onnx = no_converter
signer = signing.private_key("publish", config.project_dir)
data, _ = bundle.build(config, signer, allow_dirty=True)
Path(sys.argv[1]).write_bytes(data)
model = joblib.load(config.model_file)
"""
    + PRINT_ANSWERS
)


def test_a_bundle_that_could_not_be_compiled_serves_the_pipeline(lived, tmp_path):
    project, _ = lived
    bundle = tmp_path / "uncompiled.zip"
    script = UNCOMPILED_BUNDLE.format(package=project.package)
    labels, probabilities = json.loads(in_project(project, script, str(bundle)))
    manifest = json.loads(zipfile.ZipFile(bundle).read("manifest.json"))
    assert "model/model.onnx" not in manifest["members"]
    assert "could not compile to ONNX: no converter" in manifest["serving_model"]["reason"]
    with serving(project, "--bundle", str(bundle)) as client:
        assert client.call("/version")[1]["runtime"].startswith("scikit-learn ")
        status, reply = client.call("/predict", holdout_records(project))
        assert status == 200
        assert [p["prediction"] for p in reply["predictions"]] == labels
        assert [p["probabilities"] for p in reply["predictions"]] == probabilities


def test_where_onnxruntime_is_missing_the_service_serves_the_pipeline(lived, tmp_path):
    project, _ = lived
    # What a platform with no onnxruntime build (macOS on Intel) sees when importing it.
    (tmp_path / "onnxruntime.py").write_text("raise ImportError('no onnxruntime here')\n")
    records = holdout_records(project)[:3]
    with serving(project, env={"PYTHONPATH": str(tmp_path)}) as client:
        assert client.call("/version")[1]["runtime"].startswith("scikit-learn ")
        status, reply = client.call("/predict", records)
        assert status == 200 and len(reply["predictions"]) == 3


def test_a_bundle_runs_as_a_program_anywhere(lived, tmp_path):
    project, _ = lived
    registry = local_registry(project) / project.package / "bundles"
    bundle = max(registry.glob("*.zip"), key=lambda path: path.stat().st_mtime)
    manifest = json.loads(zipfile.ZipFile(bundle).read("manifest.json"))
    environment = subprocess.run(
        [sys.executable, bundle, "--environment", tmp_path / "env"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "uv sync --locked --no-install-project" in environment.stdout
    assert (tmp_path / "env" / "uv.lock").read_bytes() == (project.path / "uv.lock").read_bytes()
    # Without the locked libraries it says how to get them instead of a traceback.
    bare = subprocess.run([sys.executable, "-S", bundle], capture_output=True, text=True)
    assert bare.returncode == 2 and "--environment DIR" in bare.stderr
    # Far from the project: only the bundle and an environment made from its lock.
    python = project.path / ".venv" / "bin" / "python"
    keys = project.path / "trust" / "keys.json"
    unnamed = subprocess.run([python, bundle], capture_output=True, text=True, cwd=tmp_path)
    assert unnamed.returncode == 2 and "--trusted-keys" in unnamed.stderr
    program = [str(python), str(bundle), "--trusted-keys", str(keys)]
    with serving(project, program=program, cwd=tmp_path) as client:
        status, reply = client.call("/predict", holdout_records(project)[:2])
        assert status == 200 and len(reply["predictions"]) == 2
        assert client.call("/version")[1]["git_commit"] == manifest["git_commit"]


def test_fuzzing_the_openapi_finds_no_server_error(lived, tmp_path):
    fuzz_finds_no_server_error(lived[0], tmp_path)


def fuzz_finds_no_server_error(project: Project, tmp_path: Path, at_least: int = 500) -> None:
    """schemathesis sends hundreds of requests made from the service's own OpenAPI document
    (fewer where the contract has fewer columns to vary)."""
    schemathesis = Path(sys.executable).parent / "st"
    with serving(project) as client:
        result = subprocess.run(
            [
                schemathesis,
                "run",
                f"{client.base}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "150",
                "--seed",
                "20261122",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert result.returncode == 0, result.stdout[-3000:]
    generated = int(re.search(r"(\d+) generated", result.stdout).group(1))
    assert generated >= at_least, result.stdout[-1000:]
    assert f"{generated} generated, {generated} passed" in result.stdout
