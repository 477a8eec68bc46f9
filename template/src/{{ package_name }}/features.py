"""Feature preprocessing. It is part of the trained pipeline, so serving applies exactly it."""

from __future__ import annotations

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from .schema import FEATURE_NAMES

# Areas and their errors span orders of magnitude; a log scale makes them comparable.
LOG_SCALED = tuple(name for name in FEATURE_NAMES if "area" in name)


def build_preprocessor() -> ColumnTransformer:
    linear = [name for name in FEATURE_NAMES if name not in LOG_SCALED]
    log_scaled = make_pipeline(FunctionTransformer(np.log1p), StandardScaler())
    return ColumnTransformer(
        [("log", log_scaled, list(LOG_SCALED)), ("scale", StandardScaler(), linear)],
        verbose_feature_names_out=False,
    )
