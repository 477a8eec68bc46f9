"""The trained pipeline compiled to ONNX at packaging time, and proven to answer as it does.

scikit-learn checks its input on every call, which costs about half a millisecond per request,
and importing it (with pandas and SciPy) takes seconds. onnxruntime runs the same arithmetic in
tens of microseconds and imports in a fraction of a second. The compiled model goes into a bundle
only when it gives the pipeline's own labels, and probabilities within PROBABILITY_TOLERANCE, on
the holdout and on rows spread over the schema's whole range; otherwise the bundle serves the
pipeline itself, and the manifest says why.

A FunctionTransformer step compiles only if `features.ONNX_TRANSLATIONS` translates its function.
"""

from __future__ import annotations

import copy
from importlib.metadata import version
from typing import Any

import numpy as np

from .. import features, schema
from .bundle import MODEL_MEMBER
from .models import CompiledModel, PipelineModel

COMPILED_MEMBER = "model/model.onnx"
PROBABILITY_TOLERANCE = 1e-9
RANGE_ROWS = 2000  # spread uniformly over the schema's ranges, besides the holdout
# Operator sets every onnxruntime release since 1.14 runs.
OPSETS = {"": 18, "ai.onnx.ml": 3}


class Untranslatable(Exception):
    """A step has no ONNX translation."""


def function_shape(operator: Any) -> None:
    operator.outputs[0].type = copy.deepcopy(operator.inputs[0].type)


def function_converter(scope: Any, operator: Any, container: Any) -> None:
    from skl2onnx.algebra.onnx_ops import OnnxIdentity

    step = operator.raw_operator
    translate = getattr(features, "ONNX_TRANSLATIONS", {}).get(step.func)
    if translate is None:
        raise Untranslatable(
            f"FunctionTransformer({getattr(step.func, '__name__', step.func)}) has no entry in "
            "features.ONNX_TRANSLATIONS"
        )
    translated = translate(operator.inputs[0], container.target_opset)
    OnnxIdentity(
        translated, op_version=container.target_opset, output_names=operator.outputs[:1]
    ).add_to(scope, container)


def to_onnx(pipeline: Any) -> bytes:
    from skl2onnx import convert_sklearn, update_registered_converter
    from skl2onnx.common.data_types import DoubleTensorType
    from sklearn.preprocessing import FunctionTransformer

    update_registered_converter(
        FunctionTransformer,
        "SklearnFunctionTransformer",
        function_shape,
        function_converter,
        overwrite=True,
    )
    # Double precision end to end, as scikit-learn computes; plain arrays of probabilities; a
    # fixed graph name (the default is random), so the same pipeline gives the same bytes.
    model = convert_sklearn(
        pipeline,
        name="pipeline",
        initial_types=[("features", DoubleTensorType([None, len(schema.FEATURE_NAMES)]))],
        options={id(pipeline.steps[-1][1]): {"zipmap": False}},
        target_opset=OPSETS,
    )
    return model.SerializeToString()


def range_rows(count: int, seed: int = 0) -> np.ndarray:
    """Rows drawn uniformly within every feature's range, its ends included."""
    lows = np.array([feature.minimum for feature in schema.FEATURES])
    highs = np.array([feature.maximum for feature in schema.FEATURES])
    rows = np.random.default_rng(seed).uniform(lows, highs, size=(count, len(lows)))
    return np.vstack([lows, highs, rows])


def compile_pipeline(pipeline: Any, holdout: np.ndarray) -> tuple[bytes | None, dict[str, Any]]:
    """(the compiled model, or None; the manifest's `serving_model` entry, which says why)."""
    reference = PipelineModel(pipeline)
    pipeline_entry = {"member": MODEL_MEMBER, "runtime": reference.runtime}
    try:
        onnx = to_onnx(pipeline)
        compiled = CompiledModel(onnx)
    except Exception as error:  # any step skl2onnx or onnxruntime cannot take
        return None, {**pipeline_entry, "reason": f"could not compile to ONNX: {error}"}

    rows = np.vstack([holdout, range_rows(RANGE_ROWS)])
    expected_labels, expected = reference.score(rows)
    labels, probabilities = compiled.score(rows)
    parity = {
        "rows": len(rows),
        "labels_equal": bool(np.array_equal(labels, expected_labels)),
        "max_probability_difference": float(np.max(np.abs(probabilities - expected))),
    }
    close = parity["max_probability_difference"] <= PROBABILITY_TOLERANCE  # False for NaN
    if not (parity["labels_equal"] and close):
        return None, {
            **pipeline_entry,
            "reason": "the ONNX model did not answer as the pipeline does",
            "parity": parity,
        }
    return onnx, {
        "member": COMPILED_MEMBER,
        "runtime": compiled.runtime,
        "compiled_by": f"skl2onnx {version('skl2onnx')}",
        "parity": {**parity, "tolerance": PROBABILITY_TOLERANCE},
    }
