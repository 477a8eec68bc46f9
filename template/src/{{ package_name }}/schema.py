"""The input contract of the model: one definition for training, the API and batch scoring.

Every record the model sees has exactly these feature columns, each a number within its allowed
range. Training data carries the target column as well. Change the contract here and every
consumer follows: data preparation and batch scoring check rows with `row_problems`, and the
service builds its request model from `FEATURES`. Nothing else in the project lists columns.

The example measures cell nuclei in a breast-mass biopsy image: for each of ten measurements
(radius, texture, ...) the mean over the nuclei, its standard error and the worst (largest) value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the service imports this module and never needs pandas, which is slow to load
    import pandas as pd


@dataclass(frozen=True)
class Feature:
    """A numeric input column and the range a valid value lies in (both ends included)."""

    name: str
    minimum: float
    maximum: float


# Ranges are generous (about twice the largest value seen) so that they catch unit mix-ups and
# corrupt values, not unusual patients.
FEATURES: tuple[Feature, ...] = (
    Feature("mean_radius", 0.0, 60.0),
    Feature("mean_texture", 0.0, 80.0),
    Feature("mean_perimeter", 0.0, 400.0),
    Feature("mean_area", 0.0, 5000.0),
    Feature("mean_smoothness", 0.0, 0.35),
    Feature("mean_compactness", 0.0, 0.7),
    Feature("mean_concavity", 0.0, 0.9),
    Feature("mean_concave_points", 0.0, 0.4),
    Feature("mean_symmetry", 0.0, 0.6),
    Feature("mean_fractal_dimension", 0.0, 0.2),
    Feature("radius_error", 0.0, 6.0),
    Feature("texture_error", 0.0, 10.0),
    Feature("perimeter_error", 0.0, 45.0),
    Feature("area_error", 0.0, 1100.0),
    Feature("smoothness_error", 0.0, 0.065),
    Feature("compactness_error", 0.0, 0.3),
    Feature("concavity_error", 0.0, 0.8),
    Feature("concave_points_error", 0.0, 0.11),
    Feature("symmetry_error", 0.0, 0.16),
    Feature("fractal_dimension_error", 0.0, 0.06),
    Feature("worst_radius", 0.0, 75.0),
    Feature("worst_texture", 0.0, 100.0),
    Feature("worst_perimeter", 0.0, 500.0),
    Feature("worst_area", 0.0, 9000.0),
    Feature("worst_smoothness", 0.0, 0.45),
    Feature("worst_compactness", 0.0, 2.2),
    Feature("worst_concavity", 0.0, 2.6),
    Feature("worst_concave_points", 0.0, 0.6),
    Feature("worst_symmetry", 0.0, 1.4),
    Feature("worst_fractal_dimension", 0.0, 0.42),
)

FEATURE_NAMES: tuple[str, ...] = tuple(feature.name for feature in FEATURES)

TARGET = "malignant"
"""1 when the tumour is malignant, 0 when it is benign: the positive class is the one to catch."""

TARGET_VALUES: tuple[int, ...] = (0, 1)

FEATURES_BY_NAME = {feature.name: feature for feature in FEATURES}


class SchemaError(ValueError):
    """Data that breaks the contract as a whole (a missing or unknown column)."""


def row_problems(
    frame: pd.DataFrame, *, with_target: bool = True, allow_extra: bool = False
) -> pd.DataFrame:
    """The first problem of every invalid row: columns `column` and `problem`, indexed by row
    position (0-based); empty when every row is valid.

    Column problems (a missing column, or an unknown one unless `allow_extra`) concern the whole
    file and raise SchemaError.
    """
    import pandas as pd

    expected = [*FEATURE_NAMES, TARGET] if with_target else list(FEATURE_NAMES)
    missing = [name for name in expected if name not in frame.columns]
    if missing:
        raise SchemaError(f"missing column(s): {', '.join(missing)}")
    unknown = [name for name in frame.columns if name not in expected]
    if unknown and not allow_extra:
        raise SchemaError(
            f"unknown column(s): {', '.join(map(str, unknown))}; schema.py lists the columns"
        )

    columns = np.full(len(frame), None, dtype=object)
    problems = np.full(len(frame), None, dtype=object)
    unchecked = np.ones(len(frame), dtype=bool)  # rows with no problem found yet
    for name in expected:
        raw = frame[name]
        for failed, describe in value_checks(name, raw):
            new = failed.to_numpy(dtype=bool, na_value=False) & unchecked
            if new.any():
                positions = np.flatnonzero(new)
                columns[positions] = name
                problems[positions] = [describe(value) for value in raw.iloc[positions]]
                unchecked &= ~new
    bad = np.flatnonzero(~unchecked)
    return pd.DataFrame({"column": columns[bad], "problem": problems[bad]}, index=bad)


def value_checks(name: str, raw: pd.Series) -> list[tuple[pd.Series, Callable[[Any], str]]]:
    """(rows that fail, how to describe a failing value) for each rule of a column, in order."""
    import pandas as pd

    values = pd.to_numeric(raw, errors="coerce")
    checks = [
        (raw.isna(), lambda _: "missing"),
        (values.isna() & raw.notna(), lambda value: f"not a number: {value}"),
    ]
    if name == TARGET:
        allowed = ", ".join(map(str, TARGET_VALUES))
        not_allowed = values.notna() & ~values.isin(TARGET_VALUES)
        return [*checks, (not_allowed, lambda value: f"{value} is not {allowed}")]
    feature = FEATURES_BY_NAME[name]
    return [
        *checks,
        (values < feature.minimum, lambda value: f"{value} is below the minimum {feature.minimum}"),
        (values > feature.maximum, lambda value: f"{value} is above the maximum {feature.maximum}"),
    ]
