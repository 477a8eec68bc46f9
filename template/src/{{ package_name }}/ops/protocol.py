"""The Open Inference Protocol (KServe's v2, Triton's HTTP/REST API) over the served model.

KServe and Triton clients call the service as they call those servers: `/v2` (server metadata),
`/v2/health/live`, `/v2/health/ready`, `/v2/models/{name}[/versions/{v}]` (metadata),
`.../ready` and `.../infer`. Each contract column is one input tensor of shape [-1] (or [-1, 1]),
one element per record: FP64 for numbers, INT64 for whole numbers, BOOL, and BYTES (UTF-8) for
categories, text, ISO 8601 date/times and pass-through columns. The outputs are `prediction`
(the label, INT64 when the classes are whole numbers and BYTES otherwise; FP64 for regression)
and, for classification, `probability` of shape [-1, K] whose columns follow the classes in its
`classes` parameter. Tensors come and go as JSON or as Triton's binary tensor data.

The tensors are turned into records and validated by /predict's request model, so both refuse
the same values; then they are scored, counted and logged as /predict's are. Only the envelope
differs: every refusal is the protocol's `{"error": "..."}`, with status 400 for a bad request.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import struct
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from ..contract import Boolean, Column, Integer, Numeric
from .models import Loaded
from .serve import MAX_RECORDS, Refusal, Service, Validated, field_errors, read_body

HEADER_LENGTH = b"inference-header-content-length"
LITTLE_ENDIAN = {"FP64": "<f8", "INT64": "<i8", "BOOL": "?"}
HEALTH = {"/v2/health/live", "/v2/health/ready"}
MAX_ERRORS = 5  # a reply names this many refused elements at most


def datatype(column: Column) -> str:
    """The tensor type of a contract column."""
    if isinstance(column, Numeric):
        return "FP64"
    if isinstance(column, Integer):
        return "INT64"
    if isinstance(column, Boolean):
        return "BOOL"
    return "BYTES"


def label_type(loaded: Loaded) -> str:
    """The type of the `prediction` output: the classes' own type, or FP64 for regression."""
    if not loaded.contract.target.task.is_classification:
        return "FP64"
    whole = all(isinstance(c, int | np.integer) and not isinstance(c, bool) for c in loaded.classes)
    return "INT64" if whole else "BYTES"


def bad(message: str) -> Refusal:
    return Refusal(400, message)


class OpenInference:
    """The /v2 endpoints of one service, answered before FastAPI's routing as /predict is."""

    def __init__(self, service: Service) -> None:
        self.service = service
        try:
            self.server_version = importlib.metadata.version(__package__.split(".")[0])
        except importlib.metadata.PackageNotFoundError:  # a bundle run as a program
            self.server_version = "unknown"
        generate = service.api.openapi

        def openapi() -> dict[str, Any]:
            document = generate()
            document["paths"].update(self.described(document))
            return document

        service.api.openapi = openapi

    def described(self, document: dict[str, Any]) -> dict[str, Any]:
        """The /v2 endpoints in the OpenAPI document (the protocol's specification says more)."""
        name = self.service.source.current.manifest["model_name"]
        model = f"/v2/models/{name}"
        error = {"description": 'Refused or not ready: `{"error": "..."}` says why'}
        secured = "securitySchemes" in document.get("components", {})
        paths = {}
        for path, method, summary in (
            ("/v2", "get", "Server metadata"),
            ("/v2/health/live", "get", "Live"),
            ("/v2/health/ready", "get", "Ready"),
            (model, "get", "Model metadata: its inputs and outputs"),
            (f"{model}/ready", "get", "Model ready"),
            (f"{model}/infer", "post", "Inference (JSON or binary tensor data)"),
        ):
            operation = {
                "summary": summary,
                "operationId": "v2" + path.removeprefix("/v2").replace("/", "_"),
                "responses": {
                    "200": {"description": "The Open Inference Protocol's reply"},
                    **{code: error for code in ("400", "404", "405")},
                },
            }
            if method == "post":
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
                operation["responses"] |= {code: error for code in ("408", "413", "415")}
            if secured and path not in HEALTH:
                operation["security"] = [{"bearer": []}]
                operation["responses"]["401"] = error
            paths[path] = {method: operation}
        return paths

    @staticmethod
    def refused(refusal: Refusal) -> JSONResponse:
        """A refusal of a /v2 request in the protocol's words."""
        return JSONResponse({"error": str(refusal.detail)}, refusal.status, headers=refusal.headers)

    @staticmethod
    def label(path: str) -> str:
        """The path as the metrics count it: the model's name and version left out."""
        if path == "/v2" or path in HEALTH:
            return path
        if path.startswith("/v2/models/"):
            last = path.rsplit("/", 1)[-1]
            return "/v2/models/{name}/" + last if last in ("ready", "infer") else "/v2/models"
        return "other"

    async def answer(
        self, scope: dict, body: Any, send: Any, request_id: str | None, started: float
    ) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/v2":
            reply = self.server_metadata()
        elif path in HEALTH:
            reply = {"live": True} if path.endswith("live") else {"ready": self.ready()}
        elif path.startswith("/v2/models/"):
            loaded, rest = self.model(path.removeprefix("/v2/models/"))
            if rest == "infer":
                if method != "POST":
                    raise Refusal(405, "use POST", {"Allow": "POST"})
                await self.infer(scope, body, send, loaded, request_id, started)
                return
            if rest == "ready":
                reply = {"name": loaded.manifest["model_name"], "ready": self.ready()}
            elif rest == "":
                reply = self.model_metadata(loaded)
            else:
                raise Refusal(404, f"no such endpoint: {path}")
        else:
            raise Refusal(404, f"no such endpoint: {path}")
        if method != "GET":
            raise Refusal(405, "use GET", {"Allow": "GET"})
        await JSONResponse(reply)(scope, body, send)

    def ready(self) -> bool:
        """True, or a refusal saying why not (a 4xx means not ready in the protocol)."""
        source = self.service.source
        if source.current is None:
            raise Refusal(400, "no model loaded yet")
        if source.distrust:
            raise Refusal(400, f"the registry's history cannot be trusted: {source.distrust}")
        return True

    def model(self, rest: str) -> tuple[Loaded, str]:
        """The served model if the path names it (and its version, if any); the path's rest."""
        loaded = self.service.source.current
        name, _, rest = rest.partition("/")
        served = loaded.manifest["model_name"]
        if name != served:
            raise Refusal(404, f"unknown model {name!r}: this service serves {served!r}")
        if rest.startswith("versions/"):
            version, _, rest = rest.removeprefix("versions/").partition("/")
            if loaded.version is None:
                raise Refusal(404, f"{served} is served from a bundle file, which has no versions")
            if version != str(loaded.version):
                raise Refusal(
                    404, f"version {version!r} of {served} is not served; {loaded.version} is"
                )
        return loaded, rest

    def server_metadata(self) -> dict[str, Any]:
        return {
            "name": __package__.split(".")[0],
            "version": self.server_version,
            "extensions": ["binary_tensor_data"],
        }

    def model_metadata(self, loaded: Loaded) -> dict[str, Any]:
        inputs = [
            {
                "name": column.name,
                "datatype": datatype(column),
                "shape": [-1],
                "parameters": {"kind": column.kind, "nullable": column.nullable},
            }
            for column in loaded.contract.columns
        ]
        return {
            "name": loaded.manifest["model_name"],
            "versions": [] if loaded.version is None else [str(loaded.version)],
            "platform": loaded.model.runtime,
            "inputs": inputs,
            "outputs": [
                {"name": name, "datatype": kind, "shape": shape, **extra}
                for name, kind, shape, extra in self.outputs(loaded)
            ],
        }

    @staticmethod
    def outputs(loaded: Loaded) -> list[tuple[str, str, list[int], dict[str, Any]]]:
        """(name, datatype, shape, extra fields) of each output the model gives."""
        described = [("prediction", label_type(loaded), [-1], {})]
        if loaded.classes:
            # A parameter's value is a string, number or boolean: the list travels as JSON text.
            classes = json.dumps([str(c) for c in loaded.classes])
            described.append(
                (
                    "probability",
                    "FP64",
                    [-1, len(loaded.classes)],
                    {"parameters": {"classes": classes}},
                )
            )
        return described

    async def infer(
        self,
        scope: dict,
        body: Any,
        send: Any,
        loaded: Loaded,
        request_id: str,
        started: float,
    ) -> None:
        service = self.service
        headers = dict(scope["headers"])
        if headers.get(b"content-encoding", b"identity") != b"identity":
            raise Refusal(415, "send the request uncompressed (no Content-Encoding)")
        request = parse_request(await read_body(body), headers.get(HEADER_LENGTH), loaded)
        columns = request["inputs"]
        model = service.request_model(loaded)
        records = [
            dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)
        ]
        try:
            validated = model.many.validate_python(records)
        except ValidationError as error:
            raise bad(elements_refused(field_errors(error, loaded.contract))) from None
        predictions = await service.batcher.score(loaded, Validated(model, validated))
        service.predictions.inc(len(predictions))
        if service.inference is not None:
            when, latency = time.time_ns() // 1000, (time.perf_counter() - started) * 1000
            service.inference.add(loaded, request_id, when, 200, latency, validated, predictions)
        reply, binary = self.reply(loaded, request, predictions)
        if not binary:
            await Response(json.dumps(reply).encode(), media_type="application/json")(
                scope, body, send
            )
            return
        header = json.dumps(reply).encode()
        await Response(
            header + b"".join(binary),
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(len(header))},
        )(scope, body, send)

    def reply(
        self, loaded: Loaded, request: dict[str, Any], predictions: list[dict]
    ) -> tuple[dict[str, Any], list[bytes]]:
        """The inference response and the binary data that follows it, in its outputs' order."""
        tensors = {
            "prediction": [p["prediction"] for p in predictions],
            "probability": [list(p["probabilities"].values()) for p in predictions]
            if loaded.classes
            else None,
        }
        known = {name: (kind, extra) for name, kind, _, extra in self.outputs(loaded)}
        asked = request["outputs"]
        for name in asked or ():
            if name not in known:
                raise bad(f"unknown output {name!r}: the outputs are {', '.join(known)}")
        outputs, binary = [], []
        for name, as_binary in (asked or dict.fromkeys(known, request["binary"])).items():
            kind, extra = known[name]
            data = tensors[name]
            shape = [len(data), len(data[0])] if name == "probability" else [len(data)]
            output = {"name": name, "datatype": kind, "shape": shape, **extra}
            if as_binary:
                raw = encode(kind, data)
                output["parameters"] = output.get("parameters", {}) | {"binary_data_size": len(raw)}
                binary.append(raw)
            else:
                output["data"] = [x for row in data for x in row] if name == "probability" else data
            outputs.append(output)
        reply = {"model_name": loaded.manifest["model_name"], "outputs": outputs}
        if loaded.version is not None:
            reply["model_version"] = str(loaded.version)
        if request["id"] is not None:
            reply["id"] = request["id"]
        return reply, binary


def parse_request(body: bytes, header_length: bytes | None, loaded: Loaded) -> dict[str, Any]:
    """An inference request, checked against the model's inputs: its `id`, each input's elements
    as Python values (a missing value as None), and the outputs asked for (name -> binary)."""
    split = len(body)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise bad("Inference-Header-Content-Length must be a length within the body")
        split = int(header_length)
    try:
        request = json.loads(body[:split])
    except ValueError:
        raise bad("the inference request is not valid JSON") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise bad("the inference request must be a JSON object with a list of `inputs`")
    parameters = parameters_of(request, "the request")
    columns = {column.name: column for column in loaded.contract.columns}
    inputs: dict[str, list[Any]] = {}
    binary = memoryview(body)[split:]
    for tensor in request["inputs"]:
        name = tensor.get("name") if isinstance(tensor, dict) else None
        if not isinstance(name, str) or name not in columns:
            raise bad(f"unknown input {name!r}: the inputs are {', '.join(columns)}")
        if name in inputs:
            raise bad(f"input {name!r} is given twice")
        column = columns[name]
        size = parameters_of(tensor, f"input {name!r}").get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or not 0 <= size <= len(binary):
                raise bad(f"input {name!r}: binary_data_size is beyond the binary data sent")
            elements, binary = binary[:size], binary[size:]
        else:
            elements = tensor.get("data")
            if not isinstance(elements, list):
                raise bad(f"input {name!r} has no `data` and no binary_data_size")
        inputs[name] = tensor_values(tensor, column, elements)
    if len(binary):
        raise bad(f"{len(binary)} bytes of binary data follow the inputs that none of them holds")
    missing = [
        name for name, column in columns.items() if name not in inputs and not column.nullable
    ]
    if missing:
        raise bad(f"missing input(s): {', '.join(missing)}")
    counts = {len(values) for values in inputs.values()}
    if not counts:
        raise bad("send at least one input")
    if len(counts) > 1:
        raise bad("every input holds one element per record: the inputs' lengths differ")
    binary_output = bool(parameters.get("binary_data_output", False))
    asked = request.get("outputs")
    outputs = None
    if asked is not None:
        if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
            raise bad("`outputs` must be a list of objects with a `name`")
        outputs = {
            str(o.get("name")): bool(
                parameters_of(o, "an output").get("binary_data", binary_output)
            )
            for o in asked
        }
    identifier = request.get("id")
    if identifier is not None and not isinstance(identifier, str):
        raise bad("the request's `id` must be a string")
    return {
        "id": identifier,
        "inputs": inputs,
        "outputs": outputs,
        "binary": binary_output,
    }


def parameters_of(tensor: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = tensor.get("parameters", {})
    if not isinstance(parameters, dict):
        raise bad(f"the parameters of {what} must be a JSON object")
    return parameters


def tensor_values(tensor: dict[str, Any], column: Column, elements: Any) -> list[Any]:
    """An input's elements as the request model reads a record's values; the contract's checks
    are the request model's, not these."""
    name, kind = column.name, datatype(column)
    if tensor.get("datatype") != kind:
        raise bad(f"input {name!r} is {kind}, not {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) not in (1, 2)
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or shape[1:] not in ([], [1])
    ):
        raise bad(f"input {name!r} must have shape [n] or [n, 1], one element per record")
    count = shape[0]
    if not 1 <= count <= MAX_RECORDS:
        raise bad(f"send between 1 and {MAX_RECORDS} records")
    if isinstance(elements, memoryview):
        values = decode(kind, elements, count, name)
    else:
        values = list(flattened(elements))
    if len(values) != count:
        raise bad(f"input {name!r} has {len(values)} elements; its shape says {count}")
    if column.nullable:
        # The protocol has no null in binary data: NaN and "" are missing values there.
        values = [
            None if v == "" or (isinstance(v, float) and math.isnan(v)) else v for v in values
        ]
    return values


def flattened(data: list[Any]) -> Iterator[Any]:
    """A tensor's JSON elements in row-major order, whether nested or flat."""
    for item in data:
        if isinstance(item, list):
            yield from flattened(item)
        else:
            yield item


def decode(kind: str, raw: memoryview, count: int, name: str) -> list[Any]:
    """Binary tensor data as Python values: little-endian numbers, one byte per BOOL, BYTES
    elements each after its 4-byte little-endian length."""
    if kind != "BYTES":
        dtype = np.dtype(LITTLE_ENDIAN[kind])
        if len(raw) != count * dtype.itemsize:
            raise bad(
                f"input {name!r}: {len(raw)} bytes of binary data for {count} {kind} elements"
            )
        return np.frombuffer(raw, dtype).tolist()
    values, offset = [], 0
    try:
        while offset < len(raw):
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4 + length
            if offset > len(raw):
                raise struct.error
            values.append(str(raw[offset - length : offset], "utf-8"))
    except struct.error:
        raise bad(f"input {name!r}: its BYTES elements do not fit its binary data") from None
    except UnicodeDecodeError:
        raise bad(f"input {name!r}: element {len(values)} is not UTF-8 text") from None
    return values


def encode(kind: str, data: list[Any]) -> bytes:
    """An output's values as binary tensor data."""
    if kind != "BYTES":
        return np.asarray(data, dtype=LITTLE_ENDIAN[kind]).tobytes()
    pieces = [str(value).encode() for value in data]
    return b"".join(struct.pack("<I", len(piece)) + piece for piece in pieces)


def elements_refused(errors: list[dict[str, Any]]) -> str:
    """The request model's refusals, said of inputs and elements rather than records' fields."""
    said = [
        f"input {item['loc'][2]!r}, element {item['loc'][1]}: {item['msg']}"
        if len(item["loc"]) == 3
        else item["msg"]
        for item in errors[:MAX_ERRORS]
    ]
    more = len(errors) - MAX_ERRORS
    return "; ".join(said) + (f"; and {more} more" if more > 0 else "")
