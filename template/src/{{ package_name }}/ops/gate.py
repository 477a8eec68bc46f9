"""The deploy gate: a candidate must be good enough on its own and no worse than production.

Both models score the same holdout rows with the metrics of the contract's task (tasks.py). The
thresholds live in params.yaml (`gate`): the candidate must reach `minimum` on `metric` (or stay
under `maximum` for a metric where lower is better, such as rmse) and may be at most
`max_regression` worse than the version that serves in production.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

from .. import tasks
from ..contract import Contract, Task
from .audit import Refused
from .bundle import SCHEMA_MEMBER, Bundle

MAX_POINTS = 300  # predicted-against-actual points a report draws


class GateError(Refused):
    """The gate's thresholds in params.yaml do not fit the task; the message says what to set."""


@dataclass
class Evaluation:
    """One model on the holdout: its scores, and what the report draws for the task."""

    scores: dict[str, float]
    rows: int
    roc: list[tuple[float, float]] = field(default_factory=list)  # binary
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)  # actual -> predicted
    points: list[tuple[float, float]] = field(default_factory=list)  # regression: actual, pred


@dataclass
class GateResult:
    passed: bool
    task: Task
    metric: str
    higher_is_better: bool
    limit: float  # the minimum, or the maximum when lower is better
    max_regression: float
    candidate: Evaluation
    production: Evaluation | None = None
    production_version: int | None = None
    reasons: list[str] = field(default_factory=list)
    note: str = ""  # why production was not compared, when it could not be

    @property
    def limit_name(self) -> str:
        return "minimum" if self.higher_is_better else "maximum"

    def summary(self) -> dict[str, Any]:
        """What the audit record keeps: the verdict and the numbers behind it."""
        return {
            "passed": self.passed,
            "task": str(self.task),
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            self.limit_name: self.limit,
            "max_regression": self.max_regression,
            "candidate": self.candidate.scores[self.metric],
            "production": self.production.scores[self.metric] if self.production else None,
            "production_version": self.production_version,
            "holdout_rows": self.candidate.rows,
            "reasons": self.reasons,
            **({"note": self.note} if self.note else {}),
        }


def evaluate_model(model: Any, holdout: pd.DataFrame, contract: Contract) -> Evaluation:
    target = contract.target
    actual = target.to_model(holdout[target.name])
    answers = tasks.predict(model, contract.model_frame(holdout), target.task)
    evaluation = Evaluation(tasks.score(actual, answers, target), rows=len(holdout))
    if target.task is Task.REGRESSION:
        every = max(1, len(actual) // MAX_POINTS)
        evaluation.points = [
            (round(float(a), 4), round(float(p), 4))
            for a, p in zip(actual[::every], answers.predicted[::every], strict=True)
        ]
        return evaluation
    pairs = Counter(zip(map(str, actual), map(str, answers.predicted), strict=True))
    evaluation.confusion = {
        str(real): {str(said): pairs[str(real), str(said)] for said in target.classes}
        for real in target.classes
    }
    if target.task is Task.BINARY:
        positive = answers.probabilities[:, list(answers.classes).index(target.positive)]
        fpr, tpr, _ = metrics.roc_curve(actual == target.positive, positive)
        evaluation.roc = [
            (round(float(x), 4), round(float(y), 4)) for x, y in zip(fpr, tpr, strict=True)
        ]
    return evaluation


def comparable(production: Bundle, candidate: Bundle) -> bool:
    """Whether both models take the same columns and predict the same target, so both can be
    scored on the candidate's holdout (ranges and categories may have changed)."""

    def shape(bundle: Bundle) -> tuple:
        document = json.loads(bundle.members[SCHEMA_MEMBER])
        target = document["target"]
        columns = document.get("columns") or document.get("features", [])
        kinds = [(column["name"], column.get("kind", "number")) for column in columns]
        classes = target.get("classes", target.get("values"))
        return kinds, target["name"], target.get("task", "binary"), classes

    return shape(production) == shape(candidate)


def thresholds_for(task: Task, thresholds: dict[str, Any]) -> tuple[str, tasks.Metric, float]:
    """(metric name, metric, its limit) from params.yaml's gate section, or GateError."""
    known = tasks.METRICS[task]
    name = thresholds.get("metric")
    if name not in known:
        raise GateError(
            f"params.yaml gate.metric must be one of {', '.join(known)} for a {task} target, "
            f"not {name!r}"
        )
    metric = known[name]
    wanted, other = ("minimum", "maximum") if metric.higher_is_better else ("maximum", "minimum")
    if wanted not in thresholds:
        direction = "higher" if metric.higher_is_better else "lower"
        raise GateError(
            f"{name}: {direction} is better, so params.yaml needs gate.{wanted}"
            + (f" instead of gate.{other}" if other in thresholds else "")
        )
    return name, metric, float(thresholds[wanted])


def decide(
    candidate: Any,
    production: Any | None,
    production_version: int | None,
    holdout: pd.DataFrame,
    thresholds: dict[str, Any],
    contract: Contract,
) -> GateResult:
    task = contract.target.task
    name, metric, limit = thresholds_for(task, thresholds)
    result = GateResult(
        passed=True,
        task=task,
        metric=name,
        higher_is_better=metric.higher_is_better,
        limit=limit,
        max_regression=float(thresholds.get("max_regression", 0.0)),
        candidate=evaluate_model(candidate, holdout, contract),
    )
    sign = 1.0 if metric.higher_is_better else -1.0
    score = result.candidate.scores[name]
    if sign * (score - limit) < 0:
        side = "below the minimum" if metric.higher_is_better else "above the maximum"
        result.reasons.append(f"{name} {score:.4f} is {side} {limit:.4f}")
    if production is not None:
        result.production = evaluate_model(production, holdout, contract)
        result.production_version = production_version
        baseline = result.production.scores[name]
        worse_by = sign * (baseline - score)
        if not np.isclose(score, baseline) and worse_by > result.max_regression:
            result.reasons.append(
                f"{name} {score:.4f} is more than {result.max_regression:.4f} worse than "
                f"production (version {production_version}: {baseline:.4f})"
            )
    result.passed = not result.reasons
    return result
