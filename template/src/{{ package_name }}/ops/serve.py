"""The REST service: answers with the model version a registry stage names, and follows it.

Requests are validated against `schema.py`, the same contract training used, so a bad record gets
a 4xx that names the field and never reaches the model. Before a bundle is loaded its sha256 is
checked against the registry's record. A background thread watches the stage; when a deploy or a
rollback changes it, the new bundle is loaded, verified and warmed, then swapped in with one
assignment, so requests in flight finish on the model they started with.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from typing import Annotated, Any

import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from .. import schema
from .models import Loaded, load, serving_version
from .registry import Registry

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
MAX_RECORDS = 1_000
KNOWN_PATHS = {"/predict", "/health", "/ready", "/version", "/metrics"}
BEARER = HTTPBearer(auto_error=False)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# One field per schema feature: a finite number within the feature's range. Unknown fields are
# refused, so a renamed or misspelt column cannot be silently ignored.
Record: type[BaseModel] = create_model(
    "Record",
    __config__=ConfigDict(extra="forbid"),
    **{
        feature.name: (
            Annotated[float, Field(strict=True, ge=feature.minimum, le=feature.maximum)],
            ...,
        )
        for feature in schema.FEATURES
    },
)


RECORDS = TypeAdapter(list[Record])
# /predict takes one record or a list of them.
REQUEST_SCHEMA = {
    "anyOf": [
        Record.model_json_schema(),
        {
            "type": "array",
            "items": Record.model_json_schema(),
            "minItems": 1,
            "maxItems": MAX_RECORDS,
        },
    ]
}


def field_errors(error: ValidationError, many: bool) -> list[dict[str, Any]]:
    """Pydantic's errors with locations as the client sent them: body, [index,] field."""
    errors = []
    for item in error.errors(include_url=False, include_context=False):
        location = list(item["loc"]) if many else list(item["loc"][1:])
        errors.append({"loc": ["body", *location], "msg": item["msg"], "type": item["type"]})
    return errors


class Source:
    """Where the model comes from: a registry stage (followed) or a fixed bundle file."""

    def __init__(self, registry: Registry | None, stage: str, bundle_file: str | None) -> None:
        self.registry = registry
        self.stage = stage
        self.bundle_file = bundle_file
        self.current: Loaded | None = None

    def refresh(self) -> bool:
        """Load the stage's version if it changed; True when a new model was swapped in."""
        if self.bundle_file:
            if self.current is None:
                with open(self.bundle_file, "rb") as handle:
                    self.current = load(handle.read(), None)
                return True
            return False
        version = serving_version(self.registry, self.stage)
        if self.current and self.current.version == version:
            return False
        self.current = load(self.registry.bundle(version), version)
        log.info("now serving version %s of %s", version, self.stage)
        return True

    def follow(self, every_seconds: float) -> threading.Thread:
        def watch() -> None:
            while True:
                time.sleep(every_seconds)
                try:
                    self.refresh()
                except Exception:
                    # Keep serving the verified model; say why the new one was not taken.
                    log.exception("could not load the new version of %s", self.stage)

        thread = threading.Thread(target=watch, name="follow-registry", daemon=True)
        thread.start()
        return thread


def create_app(source: Source, token: str | None = None) -> FastAPI:
    app = FastAPI(title="model service", description=__doc__)
    metrics = CollectorRegistry()
    requests = Counter("requests", "HTTP requests", ["path", "status"], registry=metrics)
    latency = Histogram(
        "request_seconds", "Request latency", ["path"], buckets=LATENCY_BUCKETS, registry=metrics
    )
    predictions = Counter("predictions", "Records scored", registry=metrics)
    serving = Gauge("serving_version", "Model version being served", registry=metrics)

    def authorised(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            response: Response = JSONResponse(
                {"detail": f"the request body must be at most {MAX_BODY_BYTES} bytes"}, 413
            )
        else:
            response = await call_next(request)
        path = request.url.path if request.url.path in KNOWN_PATHS else "other"
        requests.labels(path, str(response.status_code)).inc()
        latency.labels(path).observe(time.perf_counter() - started)
        return response

    @app.post(
        "/predict",
        dependencies=[Depends(authorised)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": REQUEST_SCHEMA}},
            }
        },
    )
    async def predict(request: Request) -> dict[str, Any]:
        try:
            payload = json.loads(await request.body())
        except ValueError:
            raise HTTPException(400, "the request body is not valid JSON") from None
        many = isinstance(payload, list)
        try:
            records = RECORDS.validate_python(payload if many else [payload])
        except ValidationError as error:
            raise RequestValidationError(field_errors(error, many)) from None
        if not records or len(records) > MAX_RECORDS:
            raise HTTPException(422, f"send between 1 and {MAX_RECORDS} records")
        current = source.current
        rows = [[getattr(r, name) for name in schema.FEATURE_NAMES] for r in records]
        labels, probabilities = current.score(pd.DataFrame(rows, columns=schema.FEATURE_NAMES))
        predictions.inc(len(records))
        return {
            "model_version": current.version,
            "predictions": [
                {"prediction": int(label), "probability": float(probability)}
                for label, probability in zip(labels, probabilities, strict=True)
            ],
        }

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> dict[str, Any]:
        if source.current is None:
            raise HTTPException(503, "no model loaded yet")
        return {"status": "ready", "model_version": source.current.version}

    @app.get("/version", dependencies=[Depends(authorised)])
    async def version() -> dict[str, Any]:
        manifest = source.current.manifest
        return {
            "model_version": source.current.version,
            "model_name": manifest["model_name"],
            "git_commit": manifest["git_commit"],
            "data_hashes": manifest["data_hashes"],
            "trained_at": manifest["created_at"],
            "metrics": manifest["metrics"],
        }

    @app.get("/metrics", dependencies=[Depends(authorised)])
    async def prometheus() -> Response:
        serving.set(source.current.version or 0)
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    return app


def app_from_environment() -> FastAPI:
    """The app for one uvicorn worker, configured by the variables `cli serve` sets."""
    from . import settings

    bundle_file = os.environ.get("LAB2PROD_SERVE_BUNDLE") or None
    registry = None
    if bundle_file is None:
        config = settings.load()
        registry = Registry(config.registry, config.model_name)
    source = Source(registry, os.environ.get("LAB2PROD_SERVE_STAGE", "production"), bundle_file)
    source.refresh()
    if bundle_file is None:
        source.follow(float(os.environ.get("LAB2PROD_SERVE_POLL_SECONDS", "2")))
    return create_app(source, os.environ.get("LAB2PROD_TOKEN") or None)
