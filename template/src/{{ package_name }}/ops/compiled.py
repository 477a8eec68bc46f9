"""The trained pipeline compiled to ONNX at packaging time, and proven to answer as it does.

scikit-learn checks its input on every call, which costs about half a millisecond per request,
and importing it (with pandas and SciPy) takes seconds. onnxruntime runs the same arithmetic in
tens of microseconds and imports in a fraction of a second. The graph has one typed input per
feature column (double for numbers, booleans and date/times, string for categories and text). The
compiled model goes into a bundle only when it gives the pipeline's own labels, and probabilities
(or regression values) within TOLERANCE, on the holdout and on rows spread over everything the
contract allows; otherwise the bundle serves the pipeline itself, and the manifest says why.

A FunctionTransformer step compiles only if its function carries an ONNX form
(`preprocessing.onnx_translation`).
"""

from __future__ import annotations

import copy
from importlib.metadata import version
from typing import Any

import numpy as np

from ..contract import Contract, Task
from .bundle import MODEL_MEMBER
from .models import CompiledModel, Inputs, PipelineModel

COMPILED_MEMBER = "model/model.onnx"
TOLERANCE = 1e-9  # on probabilities; on regression values, relative to max(1, |value|)
RANGE_ROWS = 2000  # spread over everything the contract allows, besides the holdout
# Operator sets every onnxruntime release since 1.14 runs.
OPSETS = {"": 18, "ai.onnx.ml": 3}


class Untranslatable(Exception):
    """A step has no ONNX translation."""


def same_shape(operator: Any) -> None:
    operator.outputs[0].type = copy.deepcopy(operator.inputs[0].type)


def function_converter(scope: Any, operator: Any, container: Any) -> None:
    from skl2onnx.algebra.onnx_ops import OnnxIdentity

    step = operator.raw_operator
    translate = getattr(step.func, "onnx_translation", None)
    if translate is None:
        raise Untranslatable(
            f"FunctionTransformer({getattr(step.func, '__name__', step.func)}) has no ONNX form: "
            "decorate its function with preprocessing.onnx_translation"
        )
    translated = translate(operator.inputs[0], container.target_opset)
    OnnxIdentity(
        translated, op_version=container.target_opset, output_names=operator.outputs[:1]
    ).add_to(scope, container)


def function_shape(operator: Any) -> None:
    """A function's output is as wide as its function makes it, of the input's element type."""
    step = operator.raw_operator
    width = len(step.get_feature_names_out()) if step.feature_names_out else None
    same_shape(operator)
    if width is not None:
        operator.outputs[0].type.shape = [None, width]


def imputer_converter(scope: Any, operator: Any, container: Any) -> None:
    """SimpleImputer on numbers in double precision: Where(IsNaN(x), statistic, x).

    onnxruntime's own Imputer takes floats only, which would cost the pipeline's precision.
    """
    from skl2onnx.algebra.onnx_ops import OnnxIdentity, OnnxIsNaN, OnnxWhere

    imputer, opset = operator.raw_operator, container.target_opset
    fill = np.asarray(imputer.statistics_, dtype=np.float64)
    if np.isnan(fill).any():
        raise Untranslatable("a SimpleImputer column had no value to learn a statistic from")
    x = operator.inputs[0]
    filled = OnnxWhere(OnnxIsNaN(x, op_version=opset), fill, x, op_version=opset)
    OnnxIdentity(filled, op_version=opset, output_names=operator.outputs[:1]).add_to(
        scope, container
    )


def to_onnx(pipeline: Any, contract: Contract) -> bytes:
    from skl2onnx import convert_sklearn, update_registered_converter
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import FunctionTransformer

    update_registered_converter(
        FunctionTransformer, "SklearnFunctionTransformer", function_shape, function_converter,
        overwrite=True,
    )  # fmt: skip
    update_registered_converter(
        SimpleImputer, "SklearnImputer", same_shape, imputer_converter, overwrite=True
    )
    inputs = [
        (column.name, (StringTensorType if column.string_input else DoubleTensorType)([None, 1]))
        for column in contract.features
    ]
    classifier = contract.target.task is not Task.REGRESSION
    # Double precision end to end, as scikit-learn computes; plain arrays of probabilities; a
    # fixed graph name (the default is random), so the same pipeline gives the same bytes.
    model = convert_sklearn(
        pipeline,
        name="pipeline",
        initial_types=inputs,
        options={id(pipeline.steps[-1][1]): {"zipmap": False}} if classifier else None,
        target_opset=OPSETS,
    )
    # The converter lists opset domains in the order this process first met them; sorted, the
    # same pipeline gives the same bytes in any process (reproduce compares them).
    imports = sorted(model.opset_import, key=lambda entry: entry.domain)
    del model.opset_import[:]
    model.opset_import.extend(imports)
    return model.SerializeToString()


def parity_rows(contract: Contract, holdout: Any) -> Inputs:
    """The holdout's model inputs and RANGE_ROWS more spread over the whole contract."""
    import pandas as pd

    rows = pd.concat([holdout, contract.sample(RANGE_ROWS)], ignore_index=True)
    return contract.model_inputs(rows)


def compare(expected: tuple, got: tuple, task: Task) -> dict[str, Any]:
    (expected_labels, expected_probabilities), (labels, probabilities) = expected, got
    if task is Task.REGRESSION:
        scale = np.maximum(1.0, np.abs(expected_labels))
        return {"max_relative_difference": float(np.max(np.abs(labels - expected_labels) / scale))}
    return {
        "labels_equal": bool(np.array_equal(labels, expected_labels)),
        "max_probability_difference": float(np.max(np.abs(probabilities - expected_probabilities))),
    }


def agreement(parity: dict[str, Any]) -> str:
    """How closely the compiled model answered as the pipeline, in words."""
    if "max_relative_difference" in parity:
        return f"values within {parity['max_relative_difference']:.1e} (relative)"
    return f"same labels and probabilities within {parity['max_probability_difference']:.1e}"


def compile_pipeline(
    pipeline: Any, contract: Contract, holdout: Any
) -> tuple[bytes | None, dict[str, Any]]:
    """(the compiled model, or None; the manifest's `serving_model` entry, which says why).
    `holdout` holds rows in contract types."""
    task = contract.target.task
    reference = PipelineModel(pipeline, task)
    pipeline_entry = {"member": MODEL_MEMBER, "runtime": reference.runtime}
    try:
        onnx = to_onnx(pipeline, contract)
        compiled = CompiledModel(onnx, contract)
    except Exception as error:  # any step skl2onnx or onnxruntime cannot take
        return None, {**pipeline_entry, "reason": f"could not compile to ONNX: {error}"}

    rows = parity_rows(contract, holdout)
    parity = {"rows": len(next(iter(rows.values()))), **compare(
        reference.score(rows), compiled.score(rows), task
    )}  # fmt: skip
    difference = parity.get("max_probability_difference", parity.get("max_relative_difference"))
    close = difference <= TOLERANCE  # False for NaN
    if not (parity.get("labels_equal", True) and close):
        return None, {
            **pipeline_entry,
            "reason": "the ONNX model did not answer as the pipeline does",
            "parity": parity,
        }
    return onnx, {
        "member": COMPILED_MEMBER,
        "runtime": compiled.runtime,
        "compiled_by": f"skl2onnx {version('skl2onnx')}",
        "parity": {**parity, "tolerance": TOLERANCE},
    }
