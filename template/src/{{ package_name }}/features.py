"""Feature preprocessing. It is part of the trained pipeline, so serving applies exactly it.

It works on rows in the schema's column order, as arrays or DataFrames. Selecting columns by
name for each call would cost more than the model itself (milliseconds for a single row), and the
steps go straight into the model's pipeline rather than a nested one, whose every call pays again
for scikit-learn's checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import TransformerMixin
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from .schema import FEATURE_NAMES

# Areas and their errors span orders of magnitude; a log scale makes them comparable.
LOG_SCALED = tuple(name for name in FEATURE_NAMES if "area" in name)
LOG_POSITIONS = [FEATURE_NAMES.index(name) for name in LOG_SCALED]


def log_scale_areas(features: np.ndarray) -> np.ndarray:
    """A copy of the features with log1p applied to the area columns."""
    values = np.array(features, dtype=np.float64)
    values[:, LOG_POSITIONS] = np.log1p(values[:, LOG_POSITIONS])
    return values


def log_scale_areas_onnx(features: Any, opset: int) -> Any:
    """`log_scale_areas` as ONNX operators, so that packaging can compile the pipeline."""
    from skl2onnx.algebra.onnx_ops import OnnxAdd, OnnxLog, OnnxWhere

    is_area = np.isin(np.arange(len(FEATURE_NAMES)), LOG_POSITIONS)
    logged = OnnxLog(OnnxAdd(features, np.array([1.0]), op_version=opset), op_version=opset)
    return OnnxWhere(is_area, logged, features, op_version=opset)


# The ONNX form of each function a FunctionTransformer step applies (see ops/compiled.py). A model
# with a step missing here is served by scikit-learn itself: the same answers, slower. Packaging
# checks that a translation answers as the function does before a bundle may serve it.
ONNX_TRANSLATIONS: dict[Callable[..., Any], Callable[[Any, int], Any]] = {
    log_scale_areas: log_scale_areas_onnx
}


def preprocessing_steps() -> list[tuple[str, TransformerMixin]]:
    return [
        ("log_areas", FunctionTransformer(log_scale_areas, feature_names_out="one-to-one")),
        ("scale", StandardScaler()),
    ]
