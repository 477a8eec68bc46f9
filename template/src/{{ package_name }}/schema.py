"""The input contract of the model: one definition for training, the API and batch scoring.

Every record the model sees has exactly these feature columns, each a number within its allowed
range. Training data carries the target column as well. Change the contract here and every
consumer follows; nothing else in the project lists columns.

The example measures cell nuclei in a breast-mass biopsy image: for each of ten measurements
(radius, texture, ...) the mean over the nuclei, its standard error and the worst (largest) value.
"""

from __future__ import annotations

from dataclasses import dataclass


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
