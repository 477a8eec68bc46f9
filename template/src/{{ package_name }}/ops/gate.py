"""The deploy gate: a candidate must be good enough on its own and no worse than production.

Both models score the same holdout rows. The thresholds live in params.yaml (`gate`): the
candidate must reach `minimum` on `metric` and may fall at most `max_regression` below the
version that serves in production.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

from .. import schema

SCORES = {
    "roc_auc": lambda actual, predicted, probability: metrics.roc_auc_score(actual, probability),
    "accuracy": lambda actual, predicted, probability: metrics.accuracy_score(actual, predicted),
    "precision": lambda actual, predicted, probability: metrics.precision_score(
        actual, predicted, zero_division=0
    ),
    "recall": lambda actual, predicted, probability: metrics.recall_score(
        actual, predicted, zero_division=0
    ),
    "f1": lambda actual, predicted, probability: metrics.f1_score(
        actual, predicted, zero_division=0
    ),
}


@dataclass
class Evaluation:
    """One model on the holdout: its scores, ROC curve and confusion matrix."""

    scores: dict[str, float]
    roc: list[tuple[float, float]]
    confusion: dict[str, int]


@dataclass
class GateResult:
    passed: bool
    metric: str
    minimum: float
    max_regression: float
    candidate: Evaluation
    production: Evaluation | None = None
    production_version: int | None = None
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """What the audit record keeps: the verdict and the numbers behind it."""
        return {
            "passed": self.passed,
            "metric": self.metric,
            "minimum": self.minimum,
            "max_regression": self.max_regression,
            "candidate": self.candidate.scores[self.metric],
            "production": self.production.scores[self.metric] if self.production else None,
            "production_version": self.production_version,
            "holdout_rows": sum(self.candidate.confusion.values()),
            "reasons": self.reasons,
        }


def evaluate_model(model: Any, holdout: pd.DataFrame) -> Evaluation:
    features = holdout[list(schema.FEATURE_NAMES)]
    actual = holdout[schema.TARGET].to_numpy()
    probability = model.predict_proba(features)[:, 1]
    predicted = model.predict(features)
    scores = {
        name: round(float(score(actual, predicted, probability)), 6)
        for name, score in SCORES.items()
    }
    fpr, tpr, _ = metrics.roc_curve(actual, probability)
    tn, fp, fn, tp = metrics.confusion_matrix(actual, predicted, labels=[0, 1]).ravel()
    return Evaluation(
        scores=scores,
        roc=[(round(float(x), 4), round(float(y), 4)) for x, y in zip(fpr, tpr, strict=True)],
        confusion={
            "true_negative": int(tn),
            "false_positive": int(fp),
            "false_negative": int(fn),
            "true_positive": int(tp),
        },
    )


def decide(
    candidate: Any,
    production: Any | None,
    production_version: int | None,
    holdout: pd.DataFrame,
    thresholds: dict[str, Any],
) -> GateResult:
    metric = thresholds["metric"]
    if metric not in SCORES:
        raise ValueError(f"params.yaml gate.metric must be one of {', '.join(SCORES)}: {metric!r}")
    result = GateResult(
        passed=True,
        metric=metric,
        minimum=float(thresholds["minimum"]),
        max_regression=float(thresholds["max_regression"]),
        candidate=evaluate_model(candidate, holdout),
    )
    score = result.candidate.scores[metric]
    if score < result.minimum:
        result.reasons.append(f"{metric} {score:.4f} is below the minimum {result.minimum:.4f}")
    if production is not None:
        result.production = evaluate_model(production, holdout)
        result.production_version = production_version
        baseline = result.production.scores[metric]
        if not np.isclose(score, baseline) and score < baseline - result.max_regression:
            result.reasons.append(
                f"{metric} {score:.4f} is more than {result.max_regression:.4f} below production "
                f"(version {production_version}: {baseline:.4f})"
            )
    result.passed = not result.reasons
    return result
