"""The REST service: answers with the model version a registry stage names, and follows it.

Requests are validated against the contract in the served bundle, the one its model was trained
with, so a bad record gets a 4xx that names the field and never reaches the model. The reply
fits the task: the label and every class's probability, or the value for regression. Nothing is
loaded before it verifies: the log's records, their signatures and its anchored head, then the
bundle's sha256 against its signed record (or, for a bundle file, its manifest's signature). A
background thread watches the stage; when a deploy or a rollback changes it, the new bundle is
loaded, verified and warmed, then swapped in with one assignment, so requests in flight finish on
the model they started with. A log that stops verifying (cut, rewritten, signed by an untrusted
key) is not followed: the service keeps its verified model and reports itself not ready.
What /predict scored, and each request it refused, goes to the inference log (`inference.py`)
without waiting for it; every reply carries its request id in `X-Request-ID`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import gc
import hmac
import ipaddress
import itertools
import json
import logging
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from ..contract import Column, Contract
from .anchor import Head
from .audit import AuditError
from .bundle import Bundle, verified
from .explain import Explainer, Unexplainable
from .inference import InferenceLog
from .models import Inputs, Loaded, load, serving_version
from .registry import Registry, open_registry
from .signing import Trust, load_trust, project_trust

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
TOO_LARGE = f"the request body must be at most {MAX_BODY_BYTES} bytes"
# A refused request's unread body is read and dropped up to this size before the reply; closing
# on unread data would reset the connection, and the client would never see why.
MAX_DISCARDED_BYTES = 16 * MAX_BODY_BYTES
MAX_RECORDS = 1_000
KNOWN_PATHS = {"/predict", "/explain", "/health", "/ready", "/version", "/metrics", "/dashboard"}
# Probes stay open when a token is set, so an orchestrator can check the service without it.
PROBES = {"/health", "/ready", "/v2/health/live", "/v2/health/ready"}
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
SEND_JSON = "send the records as JSON, with the header `Content-Type: application/json`"
# What pydantic's JSON parser makes of NaN, Infinity and -Infinity (or a number too large).
NOT_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
# Set in a request's scope by `Deadlines` when its body stopped arriving: the seconds waited.
BODY_STALLED = "lab2prod.body_stalled"
MAX_REQUEST_ID = 128
# The ids the service gives requests: this process's random prefix and a count, unique without
# drawing randomness from the system for every request.
ID_PREFIX = uuid.uuid4().hex[:16]
ID_COUNT = itertools.count()


@dataclass(frozen=True)
class RequestModel:
    """How a version's contract reads a request: one record, a list of them, and JSON Schema."""

    one: TypeAdapter
    many: TypeAdapter
    schema: dict[str, Any]
    contract: Contract
    # The feature columns read as plain float64 (the base conversion), which are converted in one
    # call; the others, each by its own conversion.
    floats: tuple[tuple[str, int], ...]
    others: tuple[tuple[Column, int], ...]
    features: tuple[str, ...]

    @classmethod
    def of(cls, contract: Contract) -> RequestModel:
        # One field per column, named by the column (an alias, so any column name works).
        # Unknown fields are refused: a misspelt column cannot be silently ignored. Nullable
        # and pass-through columns may be left out.
        fields = {}
        for position, column in enumerate(contract.columns):
            annotation = column.request_type()
            optional = column.nullable
            fields[f"column_{position}"] = (
                annotation | None if optional else annotation,
                Field(None if optional else ..., alias=column.name),
            )
        record = create_model("Record", __config__=ConfigDict(extra="forbid"), **fields)
        schema = record.model_json_schema()
        return cls(
            one=TypeAdapter(record),
            many=TypeAdapter(list[record]),
            schema={
                "anyOf": [
                    schema,
                    {"type": "array", "items": schema, "minItems": 1, "maxItems": MAX_RECORDS},
                ]
            },
            contract=contract,
            floats=tuple(
                (column.name, position)
                for position, column in enumerate(contract.columns)
                if column.feeds_model and type(column).json_to_model is Column.json_to_model
            ),
            others=tuple(
                (column, position)
                for position, column in enumerate(contract.columns)
                if column.feeds_model and type(column).json_to_model is not Column.json_to_model
            ),
            features=tuple(column.name for column in contract.features),
        )

    def inputs(self, records: list[BaseModel]) -> Inputs:
        """The model inputs of validated records, one array per feature column, in the
        contract's order."""
        columns = list(zip(*(record.__dict__.values() for record in records), strict=True))
        # One array for all the float columns (None becomes NaN), its rows the columns' values.
        matrix = np.array([columns[position] for _, position in self.floats], dtype="float64")
        converted = dict(zip((name for name, _ in self.floats), matrix, strict=True))
        for column, position in self.others:
            converted[column.name] = column.json_to_model(list(columns[position]))
        return {name: converted[name] for name in self.features}


class Prediction(BaseModel):
    prediction: int | float | str
    probabilities: dict[str, float] | None = Field(
        None, description="every class's probability (classification only)"
    )


class Reply(BaseModel):
    model_version: int | None
    predictions: list[Prediction]


class Explained(Prediction):
    base_value: float | dict[str, float] = Field(
        description="the output for the mean training row (per class for classification)"
    )
    contributions: dict[str, float] | dict[str, dict[str, float]] = Field(
        description="feature -> its contribution (per class first for classification)"
    )


class ExplainReply(BaseModel):
    model_version: int | None
    scale: str = Field(
        description="what base_value + contributions add up to: log_odds (binary, positive "
        "class), logit (multiclass, per class), probability (forests), value (regression)"
    )
    predictions: list[Explained]


class Refusal(Exception):
    """A request the service will not answer; becomes a 4xx reply with this detail."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail}, self.status, headers=self.headers)


def field_errors(error: ValidationError, contract: Contract) -> list[dict[str, Any]]:
    """Pydantic's errors with locations as the client sent them: body, [index,] field.

    JSON has no NaN or Infinity, but pydantic's parser reads them; whatever the column's type, the
    client is told what it sent rather than that it is out of range or not an integer.
    """
    details = []
    for item in error.errors(include_url=False, include_context=False):
        message, kind, value = item["msg"], item["type"], item["input"]
        if isinstance(value, float) and not math.isfinite(value):
            nullable = any(c.nullable and c.name == item["loc"][-1] for c in contract.columns)
            kind = "finite_number"
            message = f"{NOT_FINITE[str(value)]} is not a number this model accepts; " + (
                "send null for a missing value" if nullable else "this field needs a value"
            )
        details.append({"loc": ["body", *item["loc"]], "msg": message, "type": kind})
    return details


class Source:
    """Where the model comes from: a registry stage (followed) or a fixed, verified bundle."""

    def __init__(self, registry: Registry | None, stage: str, bundle: Bundle | None) -> None:
        self.registry = registry
        self.stage = stage
        self.bundle = bundle
        self.current: Loaded | None = None
        self.distrust: str | None = None  # why the stage's history cannot be trusted now

    def refresh(self) -> bool:
        """Load the stage's version if it changed; True when a new model was swapped in."""
        if self.bundle:
            if self.current is None:
                self.current = load(self.bundle, None)
                return True
            return False
        version = serving_version(self.registry, self.stage)
        if self.current and self.current.version == version:
            return False
        self.current = load(Bundle.open(self.registry.bundle(version)), version)
        log.info("now serving version %s of %s", version, self.stage)
        return True

    def follow(self, every_seconds: float) -> threading.Thread:
        def watch() -> None:
            while True:
                time.sleep(every_seconds)
                try:
                    self.refresh()
                    self.distrust = None
                except AuditError as error:
                    if self.distrust != str(error):
                        log.error("not following %s: %s", self.stage, error)
                    self.distrust = str(error)
                except Exception:
                    # Keep serving the verified model; say why the new one was not taken.
                    log.exception("could not load the new version of %s", self.stage)

        thread = threading.Thread(target=watch, name="follow-registry", daemon=True)
        thread.start()
        return thread


class Board:
    """The dashboard of the served registry, drawn again only when its log has a new head.

    It reads the log with its own reader, so drawing never races the thread that follows the
    stage; the records it draws are verified as every reader's are.
    """

    def __init__(self, source: Source) -> None:
        self.source = source
        self.lock = threading.Lock()
        self.reader: Registry | None = None
        self.drawn: tuple[str, str] | None = None  # (head sha256, page)

    def page(self) -> str:
        from . import dashboard

        served = self.source.registry
        if served is None:
            raise HTTPException(404, "this service serves a bundle file: no registry to draw")
        with self.lock:
            if self.reader is None:
                name = self.source.current.manifest["model_name"]
                self.reader = Registry(served.url, name, served.log.trust)
            try:
                records = self.reader.records()
            except AuditError as error:
                raise HTTPException(
                    503, f"the registry's history cannot be trusted: {error}"
                ) from None
            head = records[-1].sha256 if records else ""
            if self.drawn is None or self.drawn[0] != head:
                self.drawn = (head, dashboard.build(self.reader, records))
            return self.drawn[1]


class Validated(NamedTuple):
    """A request's validated records and the request model that read them."""

    request: RequestModel
    records: list[BaseModel]


class Batcher:
    """Scores the records of all requests waiting at once in one model call.

    A model call costs about the same for one row as for a hundred, so under concurrent load this
    multiplies throughput; a lone request waits for nothing but one turn of the event loop. The
    records of a batch are converted to model inputs together too, in one call for its float
    columns. Requests are grouped by the model version they were validated for, so a swap
    between validation and scoring never mixes contracts.
    """

    def __init__(self) -> None:
        self.waiting: list[tuple[Loaded, Validated, asyncio.Future]] = []

    async def score(self, loaded: Loaded, validated: Validated) -> list[dict]:
        """The answers for the records of one request."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((loaded, validated, future))
        if len(self.waiting) == 1:
            # Runs after the requests that are already parsed in this turn of the loop.
            loop.call_soon(self.flush)
        return await future

    def flush(self) -> None:
        batch, self.waiting = self.waiting, []
        groups: dict[int, list[tuple[Loaded, Validated, asyncio.Future]]] = {}
        for entry in batch:
            groups.setdefault(id(entry[0]), []).append(entry)
        for group in groups.values():
            self.flush_group(group[0][0], group)

    def flush_group(self, loaded: Loaded, group: list) -> None:
        try:
            # One version, one contract: the first request's model reads them all.
            request = group[0][1].request
            inputs = request.inputs([record for _, part, _ in group for record in part.records])
            replies = answers(loaded, *loaded.score(inputs))
        except Exception as error:
            for _, _, future in group:
                if not future.done():
                    future.set_exception(error)
            return
        start = 0
        for _, part, future in group:
            end = start + len(part.records)
            if not future.done():
                future.set_result(replies[start:end])
            start = end


def check_json(content_type: bytes | None) -> None:
    """Refuse (415) a body not declared as JSON in UTF-8, the only encoding JSON may travel in
    between systems (RFC 8259): a form or plain text is not read as if it were records."""
    if content_type == b"application/json":
        return
    if content_type is None:
        raise Refusal(415, f"no Content-Type: {SEND_JSON}")
    media, *parameters = content_type.decode("latin-1").lower().split(";")
    media = media.strip()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise Refusal(415, f"the body is declared as {media or 'nothing'}: {SEND_JSON}")
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"')
        if name.strip() == "charset" and charset not in ("utf-8", "utf8"):
            raise Refusal(415, f"JSON must be sent in UTF-8, not {charset}")


async def read_body(receive: Callable[[], Awaitable[dict]]) -> bytes:
    """The request body, refused once it passes the limit (a chunked body declares no length)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refusal(400, "the client went away before the body was complete")
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            raise Refusal(413, TOO_LARGE)
        if not message.get("more_body"):
            return bytes(body)


def parse_records(body: bytes, request: RequestModel) -> Inputs:
    """Model inputs from one record or a list of them; 400 or 422 naming the field."""
    return request.inputs(validated_records(body, request))


def validated_records(body: bytes, request: RequestModel) -> list[BaseModel]:
    """One record or a list of them, validated; 400 or 422 naming the field."""
    many = body.lstrip()[:1] == b"["
    try:
        records = (request.many if many else request.one).validate_json(body)
    except ValidationError as error:
        if any(item["type"] == "json_invalid" for item in error.errors()):
            raise Refusal(400, "the request body is not valid JSON") from None
        if not many and error.errors()[0]["loc"] == ():
            raise Refusal(422, "send one record (a JSON object) or a list of them") from None
        raise Refusal(422, field_errors(error, request.contract)) from None
    if not many:
        records = [records]
    if not records or len(records) > MAX_RECORDS:
        raise Refusal(422, f"send between 1 and {MAX_RECORDS} records")
    return records


def request_id_of(scope: dict) -> str:
    """The client's X-Request-ID when it is usable as one (printable ASCII, not too long), else
    a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if (
                0 < len(value) <= MAX_REQUEST_ID
                and value.isascii()
                and value.decode().isprintable()
            ):
                return value.decode()
            break
    return f"{ID_PREFIX}{next(ID_COUNT):016x}"


def answers(loaded: Loaded, labels: np.ndarray, probabilities: np.ndarray | None) -> list[dict]:
    if probabilities is None:
        return [{"prediction": value} for value in labels.tolist()]
    names = [str(label) for label in loaded.classes]
    return [
        {"prediction": label, "probabilities": dict(zip(names, row, strict=True))}
        for label, row in zip(labels.tolist(), probabilities.tolist(), strict=True)
    ]


class Body:
    """A request's receive channel that remembers whether the body has been read to its end, and
    refuses a body that stopped arriving (408, and the connection is closed)."""

    def __init__(self, scope: dict, receive: Callable[[], Awaitable[dict]]) -> None:
        self.scope = scope
        self.receive = receive
        self.finished = False

    async def __call__(self) -> dict:
        message = await self.receive()
        if BODY_STALLED in self.scope:
            self.finished = True
            waited = self.scope[BODY_STALLED]
            detail = f"the request body stalled: nothing more arrived in {waited:g} s"
            raise Refusal(408, detail, {"Connection": "close"})
        if message["type"] != "http.request" or not message.get("more_body"):
            self.finished = True
        return message

    async def discard(self) -> None:
        dropped = 0
        # A body that stalls while dropped: the refusal is sent all the same.
        with contextlib.suppress(Refusal):
            while not self.finished and dropped <= MAX_DISCARDED_BYTES:
                dropped += len((await self()).get("body", b""))


class Service:
    """The ASGI application: auth, body limit, metrics and /predict, then FastAPI for the rest.

    /predict is answered here rather than through FastAPI's routing and dependency injection,
    which cost nearly as much per request as the model call itself. FastAPI serves the others
    and the OpenAPI document, in which /predict is described by hand.
    """

    def __init__(
        self, source: Source, token: str | None, inference: InferenceLog | None = None
    ) -> None:
        self.source, self.token, self.inference = source, token, inference
        self.batcher = Batcher()
        self.requests_for: tuple[Loaded, RequestModel] | None = None
        self.explainer_for: tuple[Loaded, Explainer | Unexplainable] | None = None
        self.explainer_lock = threading.Lock()
        self.metrics = CollectorRegistry()
        self.requests = Counter(
            "requests", "HTTP requests", ["path", "status"], registry=self.metrics
        )
        self.latency = Histogram(
            "request_seconds",
            "Request latency",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=self.metrics,
        )
        self.predictions = Counter("predictions", "Records scored", registry=self.metrics)
        self.counters: dict[tuple[str, int], Any] = {}  # (path, status) -> its counter
        self.histograms: dict[str, Any] = {}  # path -> its latency histogram
        self.serving = Gauge("serving_version", "Model version being served", registry=self.metrics)
        self.board = Board(source)
        self.drift = Gauge(
            "drift",
            "PSI of a feature's values since the version loaded, against its training data",
            ["feature"],
            registry=self.metrics,
        )
        self.prediction_drift = Gauge(
            "prediction_drift", "PSI of the predictions against the holdout's",
            registry=self.metrics,
        )  # fmt: skip
        self.drift_rows = Gauge(
            "drift_rows", "Rows the inference log holds for the served version since it loaded",
            registry=self.metrics,
        )  # fmt: skip
        self.watched: Any = None  # drift.LoggedDrift of the served version, once scraped
        if inference is not None:
            self.metrics.register(LogCounts(inference))
        self.api = self.build_api()
        from .protocol import OpenInference  # it builds on this module

        self.v2 = OpenInference(self)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        path = scope["path"]
        v2 = path == "/v2" or path.startswith("/v2/")
        infer = path == "/predict" or (v2 and path.endswith("/infer"))
        request_id = request_id_of(scope) if infer else None

        async def send_and_note(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if request_id is not None:
                    message["headers"] = [
                        *message["headers"],
                        (b"x-request-id", request_id.encode()),
                    ]
            await send(message)

        body = Body(scope, receive)
        try:
            headers = self.check(scope)
            if path == "/predict":
                await self.predict(scope, headers, body, send_and_note, request_id, started)
            elif path == "/explain":
                await self.explain(scope, headers, body, send_and_note)
            elif v2:
                await self.v2.answer(scope, body, send_and_note, request_id, started)
            else:
                await self.api(scope, body, send_and_note)
        except Refusal as refusal:
            await body.discard()
            reply = self.v2.refused(refusal) if v2 else refusal.response()
            await reply(scope, body, send_and_note)
        finally:
            label = path if path in KNOWN_PATHS else self.v2.label(path) if v2 else "other"
            self.counted(label, status).inc()
            elapsed = time.perf_counter() - started
            self.timed(label).observe(elapsed)
            if request_id is not None and status != 200 and self.inference is not None:
                # A refused request: one row, its status and no inputs.
                when = time.time_ns() // 1000
                self.inference.add(self.source.current, request_id, when, status, elapsed * 1000)

    def counted(self, label: str, status: int) -> Any:
        """The request counter of a path and status, looked up once (`labels` takes a lock)."""
        key = (label, status)
        counter = self.counters.get(key)
        if counter is None:
            counter = self.counters[key] = self.requests.labels(label, str(status))
        return counter

    def timed(self, label: str) -> Any:
        """The latency histogram of a path, looked up once."""
        histogram = self.histograms.get(label)
        if histogram is None:
            histogram = self.histograms[label] = self.latency.labels(label)
        return histogram

    def check(self, scope: dict) -> dict[bytes, bytes]:
        """Refuse a missing or wrong token, or a body declared too large, before reading it; the
        request's headers."""
        headers = dict(scope["headers"])
        if self.token is not None and scope["path"] not in PROBES:
            scheme, _, given = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.encode(), self.token.encode()
            ):
                raise Refusal(
                    401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"}
                )
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            raise Refusal(413, TOO_LARGE)
        return headers

    async def predict(
        self,
        scope: dict,
        headers: dict[bytes, bytes],
        receive: Any,
        send: Any,
        request_id: str,
        started: float,
    ) -> None:
        if scope["method"] != "POST":
            raise Refusal(405, "use POST", {"Allow": "POST"})
        check_json(headers.get(b"content-type"))
        loaded = self.source.current
        request = self.request_model(loaded)
        records = validated_records(await read_body(receive), request)
        predictions = await self.batcher.score(loaded, Validated(request, records))
        self.predictions.inc(len(predictions))
        if self.inference is not None:
            # References only: the writer's thread makes the rows.
            when, latency = time.time_ns() // 1000, (time.perf_counter() - started) * 1000
            self.inference.add(loaded, request_id, when, 200, latency, records, predictions)
        reply = json.dumps({"model_version": loaded.version, "predictions": predictions}).encode()
        # What Starlette's Response sends, without making one per request.
        headers = [(b"content-length", b"%d" % len(reply)), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply})

    async def explain(
        self, scope: dict, headers: dict[bytes, bytes], receive: Any, send: Any
    ) -> None:
        """/predict's answers with each feature's contribution; computed in a worker thread, so
        the event loop keeps answering /predict meanwhile."""
        if scope["method"] != "POST":
            raise Refusal(405, "use POST", {"Allow": "POST"})
        check_json(headers.get(b"content-type"))
        loaded = self.source.current
        inputs = parse_records(await read_body(receive), self.request_model(loaded))
        reply = await asyncio.to_thread(self.explained, loaded, inputs)
        await Response(json.dumps(reply).encode(), media_type="application/json")(
            scope, receive, send
        )

    def explained(self, loaded: Loaded, inputs: Inputs) -> dict[str, Any]:
        explainer = self.explainer(loaded)
        if isinstance(explainer, Unexplainable):
            raise Refusal(501, str(explainer))
        explanation = explainer.explain(inputs)
        records = explanation.records(loaded.contract.target.task)
        predictions = answers(loaded, *loaded.score(inputs))
        self.predictions.inc(len(predictions))
        return {
            "model_version": loaded.version,
            "scale": explanation.scale,
            "predictions": [a | e for a, e in zip(predictions, records, strict=True)],
        }

    def explainer(self, loaded: Loaded) -> Explainer | Unexplainable:
        """The served version's explainer (or why there is none), made on its first /explain:
        it unpickles the verified bundle's pipeline, which /predict never needs."""
        with self.explainer_lock:
            known = self.explainer_for
            if known is None or known[0] is not loaded:
                source = self.source
                bundle = source.bundle or Bundle.open(source.registry.bundle(loaded.version))
                try:
                    made: Explainer | Unexplainable = Explainer.of(bundle, loaded.contract)
                except Unexplainable as error:
                    made = error
                known = self.explainer_for = (loaded, made)
            return known[1]

    def measure_drift(self, loaded: Loaded) -> None:
        """Set the drift gauges from the inference log, for a registry version with a reference;
        a log that cannot be read leaves them as they were."""
        if self.source.registry is None or loaded.reference is None:
            return
        from .drift import LoggedDrift  # pandas: a cost for the first scrape, not for startup

        if self.watched is None or self.watched.version != loaded.version:
            registry = self.source.registry
            self.drift.clear()
            self.watched = LoggedDrift(
                registry.fs,
                registry.root,
                loaded.version,
                loaded.loaded_at,
                loaded.reference,
                loaded.contract,
            )
        try:
            figures = self.watched.update()
        except Exception:
            log.exception("could not read the inference log for the drift gauges")
            return
        self.drift_rows.set(figures["rows"])
        for feature, value in figures["drift"].items():
            self.drift.labels(feature).set(math.nan if value is None else value)
        value = figures["prediction_drift"]
        self.prediction_drift.set(math.nan if value is None else value)

    def request_model(self, loaded: Loaded) -> RequestModel:
        """The request model of the served version's contract, built once per version."""
        known = self.requests_for
        if known is None or known[0] is not loaded:
            known = self.requests_for = (loaded, RequestModel.of(loaded.contract))
        return known[1]

    def build_api(self) -> FastAPI:
        inference = self.inference

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            if inference is not None:
                inference.start()
            yield
            if inference is not None:
                # On shutdown (SIGTERM, Ctrl-C): what is queued is written before the exit.
                await asyncio.to_thread(inference.close)

        api = FastAPI(title="model service", description=__doc__, lifespan=lifespan)
        source = self.source

        @api.get("/health")
        async def health() -> dict[str, str]:
            return {"status": "ok"}

        @api.get("/ready")
        async def ready() -> dict[str, Any]:
            if source.current is None:
                raise HTTPException(503, "no model loaded yet")
            if source.distrust:
                raise HTTPException(
                    503, f"the registry's history cannot be trusted: {source.distrust}"
                )
            return {"status": "ready", "model_version": source.current.version}

        @api.get("/version")
        async def version() -> dict[str, Any]:
            manifest = source.current.manifest
            return {
                "model_version": source.current.version,
                "model_name": manifest["model_name"],
                "git_commit": manifest["git_commit"],
                "data_hashes": manifest["data_hashes"],
                "trained_at": manifest["created_at"],
                "metrics": manifest["metrics"],
                # Which model answers: compiled (onnxruntime) or the pipeline (scikit-learn).
                "runtime": source.current.model.runtime,
            }

        @api.get(
            "/metrics",
            response_class=PlainTextResponse,
            responses={200: {"description": "Prometheus' text exposition format"}},
        )
        async def prometheus() -> Response:
            self.serving.set(source.current.version or 0)
            await asyncio.to_thread(self.measure_drift, source.current)
            return Response(generate_latest(self.metrics), media_type=CONTENT_TYPE_LATEST)

        @api.get(
            "/dashboard",
            response_class=HTMLResponse,
            responses={
                404: {"description": "A service of a bundle file has no registry to draw"},
                503: {"description": "The registry's history cannot be trusted; says why"},
            },
        )
        def dashboard() -> Response:  # a thread of its own: drawing takes a while
            return HTMLResponse(self.board.page())

        describe(api, bearer=self.token is not None, requests=lambda: self.request_model(
            source.current
        ))  # fmt: skip
        return api


class LogCounts:
    """The inference log's counts as Prometheus counters, read when /metrics is asked."""

    def __init__(self, inference: InferenceLog) -> None:
        self.inference = inference

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, text, value in (
            ("inference_log_rows", "Rows written to the inference log", self.inference.logged),
            ("inference_log_dropped_rows", "Rows dropped: the log's queue was full",
             self.inference.dropped),
            ("inference_log_write_failures", "Writes of the inference log that failed",
             self.inference.failures),
        ):  # fmt: skip
            yield CounterMetricFamily(name, text, value=value)


def describe(api: FastAPI, bearer: bool, requests: Callable[[], RequestModel]) -> None:
    """Add /predict, answered before FastAPI's routing, and the token to the OpenAPI document."""
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        # Made afresh each time: a new version may bring a new contract.
        api.openapi_schema = None
        document = generate()
        reply = Reply.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(reply.pop("$defs"), Reply=reply)
        refused = {"description": "Refused; `detail` says why (for 422, which fields)"}
        document["paths"]["/predict"] = {
            "post": {
                "summary": "Predict",
                "description": "Score one record or a list of records with the served model.",
                "operationId": "predict",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": requests().schema}},
                },
                "responses": {
                    "200": {
                        "description": "A prediction per record, with the model version",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Reply"}}
                        },
                    },
                    **{code: refused for code in ("400", "408", "413", "415", "422")},
                },
            }
        }
        document["paths"]["/explain"] = explain_operation(document["paths"]["/predict"])
        explained = ExplainReply.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(explained.pop("$defs"), ExplainReply=explained)
        if bearer:
            document["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            for path, operations in document["paths"].items():
                if path not in PROBES:
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
                        operation["responses"]["401"] = {
                            "description": "No token, or the wrong one: send "
                            "`Authorization: Bearer <token>`"
                        }
        return document

    api.openapi = openapi


def explain_operation(predict: dict[str, Any]) -> dict[str, Any]:
    """/explain takes what /predict takes and is refused alike; it answers more, or 501."""
    operation = copy.deepcopy(predict["post"])
    operation.update(
        summary="Explain",
        description="Score records and give each feature's contribution to each answer: "
        "base_value + the contributions = the model's output on the reply's `scale`.",
        operationId="explain",
    )
    responses = operation["responses"]
    responses["200"] = {
        "description": "A prediction and its explanation per record, with the model version",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExplainReply"}}},
    }
    responses["501"] = {"description": "The served model's family cannot be explained"}
    return {"post": operation}


class Deadlines(AutoHTTPProtocol):
    """uvicorn's HTTP protocol (httptools, or h11 without it) with deadlines for slow clients.

    A connection that has not sent a request's complete headers `header_seconds` after it opened
    (or after its last reply, once more bytes come) is closed: uvicorn's keep-alive timeout ends at
    a client's first byte, so one that sends half a request line and waits would hold its
    connection for ever. A request whose body stops arriving for `body_seconds` has BODY_STALLED
    set in its scope and its app woken, to answer 408. A timer runs only while the server waits
    for a client, so a request that arrives whole costs none.
    """

    def __init__(self, *args: Any, header_seconds: float, body_seconds: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.header_seconds, self.body_seconds = header_seconds, body_seconds
        self.deadline: asyncio.TimerHandle | None = None
        self.awaiting_headers = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self.watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.watch()

    def watch(self) -> None:
        # uvicorn starts a request's cycle when its headers are complete; it is done on the reply.
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            if not self.awaiting_headers:  # the clock runs from the first wait, not the last byte
                self.set_deadline(self.header_seconds, self.transport.close)
            self.awaiting_headers = True
            return
        self.awaiting_headers = False
        if cycle.more_body and not cycle.response_started:
            self.set_deadline(self.body_seconds, self.body_stalled)  # each piece restarts it
        elif self.deadline is not None:
            self.set_deadline(None, None)

    def set_deadline(self, seconds: float | None, then: Callable[[], None] | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.deadline = None if then is None else self.loop.call_later(seconds, then)

    def body_stalled(self) -> None:
        self.deadline = None
        self.cycle.scope[BODY_STALLED] = self.body_seconds
        self.cycle.message_event.set()


def run(options: Any, stage: str, bundle: str | None, poll_seconds: float) -> None:
    """Serve until stopped: uvicorn with the options of `settings.add_server_options`.

    Each worker builds its app from environment variables, which worker processes inherit.
    """
    import uvicorn

    refuse_an_open_door(options)
    os.environ["LAB2PROD_SERVE_STAGE"] = stage
    os.environ["LAB2PROD_SERVE_BUNDLE"] = bundle or ""
    os.environ["LAB2PROD_SERVE_TRUST_UNSIGNED"] = "1" if options.trust_unsigned else ""
    os.environ["LAB2PROD_SERVE_POLL_SECONDS"] = str(poll_seconds)
    uvicorn.run(
        f"{__name__}:app_from_environment",
        factory=True,
        host=options.host,
        port=options.port,
        workers=options.workers,
        http=functools.partial(
            Deadlines, header_seconds=options.header_timeout, body_seconds=options.body_timeout
        ),
        limit_concurrency=options.max_connections,
        log_level="warning",
        access_log=False,
    )


def refuse_an_open_door(options: Any) -> None:
    """Beyond loopback, refuse to serve without a token (exit 2) unless told that something in
    front checks who calls; then warn, loudly, once."""
    if is_loopback(options.host) or os.environ.get("LAB2PROD_TOKEN"):
        return
    if not options.allow_no_token:
        print(
            f"serve: refused: {options.host} is reachable from other machines and LAB2PROD_TOKEN "
            "is not set; set it, or pass --allow-no-token (LAB2PROD_ALLOW_NO_TOKEN=1) if a proxy "
            "in front authenticates every request",
            file=sys.stderr,
        )
        raise SystemExit(2)
    print(
        f"WARNING: serving on {options.host} without LAB2PROD_TOKEN: anyone who can reach port "
        f"{options.port} can call the model",
        file=sys.stderr,
    )


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost: it may resolve to any address
        return False


def app_from_environment() -> Service:
    """The app for one uvicorn worker, configured by the variables `cli serve` sets."""
    from . import settings

    bundle_file = os.environ.get("LAB2PROD_SERVE_BUNDLE") or None
    registry, bundle, inference = None, None, None
    if bundle_file is None:
        # The image's trust/head.json is as old as the image: a head known since comes here.
        expected = os.environ.get("LAB2PROD_EXPECT_HEAD")
        heads = [Head.expected(expected)] if expected else []
        config = settings.load()
        registry = open_registry(config, heads, remember=False)
        inference = InferenceLog.of(config, registry.fs, registry.root)
    else:
        trust_unsigned = bool(os.environ.get("LAB2PROD_SERVE_TRUST_UNSIGNED"))
        # A bundle run as a program names its keys; in a project they are the project's.
        keys = os.environ.get("LAB2PROD_TRUSTED_KEYS")
        if keys:
            trust = load_trust(Path(keys))
        else:
            trust = Trust() if trust_unsigned else project_trust(settings.load().project_dir)
        with open(bundle_file, "rb") as handle:
            bundle = verified(handle.read(), trust, trust_unsigned=trust_unsigned)
    source = Source(registry, os.environ.get("LAB2PROD_SERVE_STAGE", "production"), bundle)
    source.refresh()
    # What is loaded now lives as long as the process; the collector need not scan it again and
    # again, which would stall requests for milliseconds.
    gc.collect()
    gc.freeze()
    if bundle_file is None:
        source.follow(float(os.environ.get("LAB2PROD_SERVE_POLL_SECONDS", "2")))
    project = os.environ.get("LAB2PROD_SERVE_PROJECT")
    if bundle_file is not None and project:
        # A bundle file served by the project's CLI logs to its registry, as version 0; a bundle
        # run as a program has no registry to log to.
        config = settings.load(Path(project))
        inference = InferenceLog.of(config, *Registry.location(config.registry, config.model_name))
    return Service(source, os.environ.get("LAB2PROD_TOKEN") or None, inference)
