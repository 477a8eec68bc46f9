"""The Open Inference Protocol (v2) of the service, called by Triton's own HTTP client.

The client's answers must be /predict's for the same records, with tensors sent and received as
JSON and as binary data; bad requests get the protocol's error JSON with a 4xx, never a 500.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as triton
from test_explain import packaged, project_copy
from test_serving import holdout_records, serving

NUMPY = {"FP64": np.float64, "INT64": np.int64, "BOOL": np.bool_, "BYTES": np.object_}


def infer(client, name: str, records: list[dict], binary: bool, version: str = ""):
    """The answers of the v2 inference of records: labels (as /predict words them), and each
    class's probabilities (None for regression)."""
    metadata = client.get_model_metadata(name)
    inputs = []
    for tensor in metadata["inputs"]:
        values = np.array([r[tensor["name"]] for r in records], dtype=NUMPY[tensor["datatype"]])
        given = triton.InferInput(tensor["name"], [len(records)], tensor["datatype"])
        given.set_data_from_numpy(values, binary_data=binary)
        inputs.append(given)
    outputs = [
        triton.InferRequestedOutput(o["name"], binary_data=binary) for o in metadata["outputs"]
    ]
    result = client.infer(name, inputs, model_version=version, outputs=outputs, request_id="r-1")
    assert result.get_response()["id"] == "r-1"
    labels = [
        x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("prediction").tolist()
    ]
    probability = result.get_output("probability")
    if probability is None:
        return labels, None
    classes = json.loads(probability["parameters"]["classes"])
    return labels, [
        dict(zip(classes, row, strict=True)) for row in result.as_numpy("probability").tolist()
    ]


def assert_as_predict(reply: dict, labels: list, probabilities: list | None) -> None:
    predictions = reply["predictions"]
    if probabilities is None:
        assert labels == pytest.approx([p["prediction"] for p in predictions], rel=1e-12)
        return
    assert labels == [p["prediction"] for p in predictions]
    for served, expected in zip(probabilities, predictions, strict=True):
        assert served.keys() == expected["probabilities"].keys()
        assert served == pytest.approx(expected["probabilities"], abs=1e-9)


@pytest.mark.parametrize("lived", ["local"], indirect=True)
def test_a_triton_client_gets_what_predict_answers(lived):
    project, _ = lived
    records = holdout_records(project)[:40]
    version = str(project.serving())
    with serving(project) as service:
        client = triton.InferenceServerClient(service.base.removeprefix("http://"))
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        name = service.call("/version")[1]["model_name"]
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(name) and client.is_model_ready(name, version)
        metadata = client.get_model_metadata(name, version)
        assert metadata["versions"] == [version]
        assert [t["name"] for t in metadata["inputs"]] == list(records[0])
        assert [t["name"] for t in metadata["outputs"]] == ["prediction", "probability"]
        status, reply = service.call("/predict", records)
        assert status == 200
        for binary in (True, False):
            assert_as_predict(reply, *infer(client, name, records, binary))
        assert_as_predict(reply, *infer(client, name, records, True, version))

        one = [
            {"name": k, "datatype": "FP64", "shape": [1], "data": [v]}
            for k, v in records[0].items()
        ]
        refused = {
            "wrong datatype": ("infer", {"inputs": [one[0] | {"datatype": "INT64"}, *one[1:]]}),
            "missing input": ("infer", {"inputs": one[1:]}),
            "out of range": (
                "infer",
                {"inputs": [t | {"data": [1e7]} if t["name"] == "worst_area" else t for t in one]},
            ),
            "wrong shape": ("infer", {"inputs": [t | {"shape": [2]} for t in one]}),
            "not an object": ("infer", [1]),
            "a name that is no string": ("infer", {"inputs": [{"name": ["x"]}, *one]}),
        }
        for case, (path, body) in refused.items():
            status, error = service.call(f"/v2/models/{name}/{path}", body)
            assert status == 400 and isinstance(error["error"], str), case
        status, error = service.call(f"/v2/models/{name}/infer", refused["out of range"][1])
        assert "'worst_area', element 0" in error["error"]
        for path in ("/v2/models/nobody/infer", f"/v2/models/{name}/versions/999/infer"):
            status, error = service.call(path, {"inputs": one})
            assert status == 404 and error["error"], path
        with pytest.raises(triton.InferenceServerException, match="not served"):
            infer(client, name, records, True, "999")
        assert service.call(f"/v2/models/{name}/infer", {"inputs": one})[0] == 200
        _, text = service.call("/metrics")
        assert 'requests_total{path="/v2/models/{name}/infer",status="400"} 7.0' in text


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_every_task_is_answered_alike_over_v2(generated, tmp_path, task):
    project = project_copy(generated, task, tmp_path)
    records = holdout_records(project)[:40]
    with serving(project, "--bundle", packaged(project)) as service:
        client = triton.InferenceServerClient(service.base.removeprefix("http://"))
        name = service.call("/version")[1]["model_name"]
        assert client.get_model_metadata(name)["versions"] == []  # a bundle file has none
        status, reply = service.call("/predict", records)
        assert status == 200
        for binary in (True, False):
            assert_as_predict(reply, *infer(client, name, records, binary))
