"""A verified model from a bundle, as the service and batch scoring use it.

A bundle names the model it serves in its manifest: the pipeline compiled to ONNX when packaging
could compile it and it gave the pipeline's own answers (`compiled.py`), otherwise the pipeline.
Both take the contract's model inputs, one array per feature column, and answer with labels and
the probability of every class, or with values for regression. The compiled model needs neither
scikit-learn nor pandas, so the service starts and answers faster.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from ..contract import Contract, Task, from_json
from .bundle import MODEL_MEMBER, SCHEMA_MEMBER, Bundle
from .registry import Registry

log = logging.getLogger(__name__)

Inputs = dict[str, np.ndarray]  # feature column name -> one value per row
Answers = tuple[np.ndarray, np.ndarray | None]  # labels or values; each class's probability


class NoVersion(Exception):
    """The stage serves nothing yet."""


class Model(Protocol):
    runtime: str  # what computes the answers, and its version

    def score(self, inputs: Inputs) -> Answers:
        """(labels or values, probabilities of every class or None) for rows of model inputs."""


class PipelineModel:
    """The trained scikit-learn pipeline itself."""

    def __init__(self, pipeline: Any, task: Task) -> None:
        import pandas as pd
        import sklearn

        from .. import tasks

        self.runtime = f"scikit-learn {sklearn.__version__}"
        self.pipeline, self.task = pipeline, task
        self.frame, self.predict = pd.DataFrame, tasks.predict

    def score(self, inputs: Inputs) -> Answers:
        answers = self.predict(self.pipeline, self.frame(inputs), self.task)
        return answers.predicted, answers.probabilities


class CompiledModel:
    """The pipeline compiled to ONNX, run by onnxruntime: one input per feature column."""

    def __init__(self, onnx: bytes, contract: Contract) -> None:
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
        # The graph's inputs are the features in contract order (their names made safe).
        graph_inputs = [entry.name for entry in self.session.get_inputs()]
        columns = [column.name for column in contract.features]
        self.feeds = list(zip(graph_inputs, columns, strict=True))
        self.outputs = (
            ["variable"] if contract.target.task is Task.REGRESSION else ["label", "probabilities"]
        )

    def score(self, inputs: Inputs) -> Answers:
        feed = {graph: inputs[column].reshape(-1, 1) for graph, column in self.feeds}
        answers = self.session.run(self.outputs, feed)
        if len(answers) == 1:
            return answers[0].ravel(), None
        return answers[0], answers[1]


@dataclass(frozen=True)
class Loaded:
    """A model whose bundle was checked, the version it is, and the contract it answers to."""

    version: int | None
    model: Model
    manifest: dict[str, Any]
    contract: Contract
    classes: tuple[Any, ...]  # the order of the probability columns; empty for regression
    reference: dict[str, Any] | None = None  # reference.json: drift's bins (older bundles: None)
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def score(self, inputs: Inputs) -> Answers:
        return self.model.score(inputs)


def serving_model(bundle: Bundle, contract: Contract) -> Model:
    # Bundles made before compilation existed name no serving model: they serve the pipeline.
    member = bundle.manifest.get("serving_model", {}).get("member", MODEL_MEMBER)
    if member != MODEL_MEMBER:
        try:
            return CompiledModel(bundle.members[member], contract)
        except ImportError:
            # onnxruntime has no build for some platforms (macOS on Intel): same answers, slower.
            log.warning("onnxruntime is not installed: serving the scikit-learn pipeline")
    return PipelineModel(bundle.load_model(), contract.target.task)


def contract_of(bundle: Bundle) -> Contract:
    """The contract the bundle's model was trained with."""
    return from_json(json.loads(bundle.members[SCHEMA_MEMBER]))


def load(bundle: Bundle, version: int | None) -> Loaded:
    """The model of a bundle whose origin was verified: registry or `bundle.verified`."""
    contract = contract_of(bundle)
    classes = tuple(bundle.manifest.get("classes", contract.target.classes))
    model = serving_model(bundle, contract)
    loaded = Loaded(version, model, bundle.manifest, contract, classes, bundle.reference())
    # The first prediction pays for lazy imports and caches; do it before real traffic.
    example = {
        column.name: column.json_to_model([column.example()]) for column in contract.features
    }
    loaded.score(example)
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
    """The version a stage serves, its bundle checked against the signed record's sha256."""
    version = serving_version(registry, stage)
    return load(Bundle.open(registry.bundle(version)), version)
