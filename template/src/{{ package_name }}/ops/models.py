"""A verified model from a bundle, as the service and batch scoring use it.

A bundle names the model it serves in its manifest: the pipeline compiled to ONNX when packaging
could compile it and it gave the pipeline's own answers (`compiled.py`), otherwise the pipeline.
The compiled model needs neither scikit-learn nor pandas, so the service starts and answers faster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .. import schema
from .bundle import MODEL_MEMBER, Bundle
from .registry import Registry

log = logging.getLogger(__name__)


class NoVersion(Exception):
    """The stage serves nothing yet."""


class Model(Protocol):
    runtime: str  # what computes the answers, and its version

    def score(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(predicted labels, probability of the positive class) for float64 rows in schema
        order."""


class PipelineModel:
    """The trained scikit-learn pipeline itself."""

    def __init__(self, pipeline: Any) -> None:
        import pandas as pd
        import sklearn

        self.runtime = f"scikit-learn {sklearn.__version__}"
        self.pipeline = pipeline
        self.frame = pd.DataFrame
        # A DataFrame made with a ready Index costs microseconds, with a list of names far more.
        self.columns = pd.Index(schema.FEATURE_NAMES)

    def score(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities = self.pipeline.predict_proba(self.frame(rows, columns=self.columns))
        return self.pipeline.classes_[probabilities.argmax(axis=1)], probabilities[:, 1]


class CompiledModel:
    """The pipeline compiled to ONNX, run by onnxruntime."""

    def __init__(self, onnx: bytes) -> None:
        import onnxruntime

        self.runtime = f"onnxruntime {onnxruntime.__version__}"
        options = onnxruntime.SessionOptions()
        # One thread that sleeps when idle: a request's rows are too few to share out, workers
        # scale by process, and spinning threads would take the cores other processes need.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(
            onnx, options, providers=["CPUExecutionProvider"]
        )
        self.feed = self.session.get_inputs()[0].name

    def score(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels, probabilities = self.session.run(["label", "probabilities"], {self.feed: rows})
        return labels, probabilities[:, 1]


@dataclass(frozen=True)
class Loaded:
    """A model whose bundle was checked, the version it is, and what it was built from."""

    version: int | None
    model: Model
    manifest: dict[str, Any]

    def score(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(predicted labels, probability of the positive class) for rows in schema order."""
        return self.model.score(rows)


def serving_model(bundle: Bundle) -> Model:
    # Bundles made before compilation existed name no serving model: they serve the pipeline.
    member = bundle.manifest.get("serving_model", {}).get("member", MODEL_MEMBER)
    if member != MODEL_MEMBER:
        try:
            return CompiledModel(bundle.members[member])
        except ImportError:
            # onnxruntime has no build for some platforms (macOS on Intel): same answers, slower.
            log.warning("onnxruntime is not installed: serving the scikit-learn pipeline")
    return PipelineModel(bundle.load_model())


def load(data: bytes, version: int | None) -> Loaded:
    bundle = Bundle.open(data)
    loaded = Loaded(version=version, model=serving_model(bundle), manifest=bundle.manifest)
    # The first prediction pays for lazy imports and caches; do it before real traffic.
    loaded.score(np.array([[feature.minimum for feature in schema.FEATURES]]))
    return loaded


def serving_version(registry: Registry, stage: str) -> int:
    version = registry.state().serving(stage)
    if version is None:
        raise NoVersion(
            f"no version serves in {stage}: run `nox -s retrain`, then "
            f"`nox -s deploy -- --approved-by NAME --stage {stage}`"
        )
    return version


def load_stage(registry: Registry, stage: str) -> Loaded:
    """The version a stage serves, its bundle checked against the registry's sha256."""
    version = serving_version(registry, stage)
    return load(registry.bundle(version), version)
