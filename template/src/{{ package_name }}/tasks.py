"""What each task means for a model: its default estimator, its predictions and its metrics.

`evaluate.py` (the pipeline's metrics) and the deploy gate both score models here, so a metric has
one definition and one direction: ROC AUC higher is better, RMSE lower. This module belongs to
the template: `copier update` brings its changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import metrics

from .contract import Target, Task

DECIMALS = 6  # metrics files and their diffs stay readable and stable across platforms


@dataclass(frozen=True)
class Predictions:
    """A model's answers for some rows: labels or values, and for classification the
    probability of every class (columns in `classes` order)."""

    predicted: np.ndarray
    probabilities: np.ndarray | None
    classes: tuple[Any, ...]


@dataclass(frozen=True)
class Metric:
    label: str  # what it means, for people who do not read code
    higher_is_better: bool
    compute: Callable[[np.ndarray, Predictions, Target], float]


def _positive(predictions: Predictions, target: Target) -> np.ndarray:
    return predictions.probabilities[:, list(predictions.classes).index(target.positive)]


def _labelled(function: Callable[..., float], **options: Any) -> Callable[..., float]:
    return lambda actual, p, target: function(actual, p.predicted, **options)


def _binary(function: Callable[..., float]) -> Callable[..., float]:
    return lambda actual, p, target: function(
        actual, p.predicted, pos_label=target.positive, zero_division=0
    )


METRICS: dict[Task, dict[str, Metric]] = {
    Task.BINARY: {
        "roc_auc": Metric(
            "ROC AUC (ranking quality, 1 is perfect)",
            True,
            lambda actual, p, target: metrics.roc_auc_score(
                actual == target.positive, _positive(p, target)
            ),
        ),
        "accuracy": Metric(
            "Accuracy (share of correct answers)", True, _labelled(metrics.accuracy_score)
        ),
        "precision": Metric(
            "Precision (flagged cases that were real)", True, _binary(metrics.precision_score)
        ),
        "recall": Metric(
            "Recall (real cases that were flagged)", True, _binary(metrics.recall_score)
        ),
        "f1": Metric("F1 (balance of precision and recall)", True, _binary(metrics.f1_score)),
    },
    Task.MULTICLASS: {
        "accuracy": Metric(
            "Accuracy (share of correct answers)", True, _labelled(metrics.accuracy_score)
        ),
        "balanced_accuracy": Metric(
            "Balanced accuracy (mean share of each class found)",
            True,
            _labelled(metrics.balanced_accuracy_score),
        ),
        "f1_macro": Metric(
            "F1, macro (precision and recall, every class weighing the same)",
            True,
            _labelled(metrics.f1_score, average="macro", zero_division=0),
        ),
        "log_loss": Metric(
            "Log loss (how sure it was of the right class, lower is better)",
            False,
            lambda actual, p, target: metrics.log_loss(
                actual, p.probabilities, labels=list(p.classes)
            ),
        ),
    },
    Task.REGRESSION: {
        "rmse": Metric(
            "RMSE (typical size of an error, lower is better)",
            False,
            _labelled(metrics.root_mean_squared_error),
        ),
        "mae": Metric(
            "MAE (mean size of an error, lower is better)",
            False,
            _labelled(metrics.mean_absolute_error),
        ),
        "r2": Metric(
            "R² (share of the variation explained, 1 is perfect)", True, _labelled(metrics.r2_score)
        ),
    },
}


def default_estimator(task: Task, settings: dict[str, Any]) -> Any:
    """A linear model for the task: regularised by `C` (Ridge's alpha is 1/C), deterministic."""
    from sklearn.linear_model import LogisticRegression, Ridge

    if task is Task.REGRESSION:
        return Ridge(alpha=1.0 / settings["C"])
    return LogisticRegression(
        C=settings["C"], max_iter=settings["max_iter"], random_state=settings["seed"]
    )


def predict(pipeline: Any, model_frame: Any, task: Task) -> Predictions:
    """The pipeline's answers for rows of model inputs (`CONTRACT.model_frame`)."""
    if task is Task.REGRESSION:
        return Predictions(np.asarray(pipeline.predict(model_frame), dtype="float64"), None, ())
    probabilities = pipeline.predict_proba(model_frame)
    classes = pipeline.classes_
    return Predictions(classes[probabilities.argmax(axis=1)], probabilities, tuple(classes))


def score(actual: np.ndarray, predictions: Predictions, target: Target) -> dict[str, float]:
    """Every metric of the task, rounded to DECIMALS."""
    return {
        name: round(float(metric.compute(actual, predictions, target)), DECIMALS)
        for name, metric in METRICS[target.task].items()
    }


def check_estimator(pipeline: Any, target: Target) -> None:
    """Refuse a model that does not fit the declared task: a regressor for classes, a classifier
    for a numeric target, or classes that differ from the contract's."""
    is_classifier = hasattr(pipeline, "predict_proba") and hasattr(pipeline, "classes_")
    if target.task is Task.REGRESSION:
        if is_classifier:
            raise ValueError(
                f"the model is a classifier ({len(pipeline.classes_)} classes) but schema.py "
                "declares a regression target: use a regressor in train.py"
            )
        return
    if not is_classifier:
        raise ValueError(
            f"the model is not a classifier with probabilities, but schema.py declares a "
            f"{target.task} target: use a classifier with predict_proba in train.py"
        )
    learned = [str(value) for value in pipeline.classes_]
    declared = [str(value) for value in target.classes]
    if sorted(learned) != sorted(declared):
        raise ValueError(
            f"the model learned the classes {', '.join(learned)} but schema.py declares "
            f"{', '.join(declared)}: every declared class must occur in the training data"
        )
