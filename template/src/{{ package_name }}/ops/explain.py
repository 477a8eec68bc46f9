"""Explanations per prediction: how much each contract feature moved a record's answer.

The answer explained is the model's raw output, on a scale the explanation names: `log_odds` for
a binary linear classifier (of the positive class), `logit` for a multiclass one (per class: their
softmax is the probabilities), `value` for regression, and for tree ensembles what SHAP explains
(`probability` for forests, `log_odds` for gradient boosting). In every case the base value plus
the contributions is that output, row by row.

- Linear models (scikit-learn's `linear_model`) are explained exactly: a transformed column adds
  coefficient x (value - its training mean), and the base value is the answer for the mean
  training row. The means are computed at package time into the bundle (`BASELINE_MEMBER`).
- Tree ensembles are explained by SHAP's TreeExplainer, from the optional `explain` dependency
  group, which needs no training data.
- Any other family is refused with `Unexplainable`, which names it (the service's 501).

The pipeline's preprocessing turns one contract feature into several columns (one-hot indicators,
date parts); their contributions are summed back into the feature, found from the fitted
ColumnTransformer: each branch's input columns, its output span and its output names. A feature
the model does not read (free text by default) contributes 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..contract import Contract, Task

if TYPE_CHECKING:
    import pandas as pd

    from .bundle import Bundle
    from .models import Inputs

BASELINE_MEMBER = "explain/baseline.json"
TREE_FAMILIES = {
    f"{kind}{task}"
    for kind in ("RandomForest", "ExtraTrees", "GradientBoosting", "HistGradientBoosting")
    for task in ("Classifier", "Regressor")
} | {"DecisionTreeClassifier", "DecisionTreeRegressor", "ExtraTreeClassifier", "ExtraTreeRegressor"}
INSTALL_SHAP = "install SHAP with `uv sync --group explain` (the project's `explain` group)"


class Unexplainable(Exception):
    """The model cannot be explained here; the message says which family and what can be."""


@dataclass(frozen=True)
class Explanation:
    """Contributions of every feature to every explained output, for some rows."""

    scale: str
    outputs: tuple[str, ...]  # the class each output is for; ("",) for regression
    features: tuple[str, ...]
    base: np.ndarray  # one per output
    contributions: np.ndarray  # rows x outputs x features

    def records(self, task: Task) -> list[dict[str, Any]]:
        """Per row: `base_value` and `contributions` (feature -> value), keyed by class for
        classification."""

        def one(row: np.ndarray, output: int) -> dict[str, float]:
            return dict(zip(self.features, row[output].tolist(), strict=True))

        if task is Task.REGRESSION:
            base = float(self.base[0])
            return [{"base_value": base, "contributions": one(r, 0)} for r in self.contributions]
        bases = dict(zip(self.outputs, self.base.tolist(), strict=True))
        return [
            {
                "base_value": bases,
                "contributions": {c: one(row, o) for o, c in enumerate(self.outputs)},
            }
            for row in self.contributions
        ]

    def columns(self, predicted: np.ndarray) -> dict[str, np.ndarray]:
        """Batch columns: `base_value` and `contribution.<feature>`, toward the row's predicted
        class when there are several classes."""
        rows = np.arange(len(self.contributions))
        output = np.zeros(len(rows), dtype=int)
        if len(self.outputs) > 1:
            position = {name: index for index, name in enumerate(self.outputs)}
            output = np.array([position[str(label)] for label in predicted], dtype=int)
        chosen = self.contributions[rows, output]
        columns = {"base_value": self.base[output]}
        for index, feature in enumerate(self.features):
            columns[f"contribution.{feature}"] = chosen[:, index]
        return columns


def column_names(features: tuple[str, ...]) -> list[str]:
    return ["base_value", *(f"contribution.{feature}" for feature in features)]


def baseline(pipeline: Any, contract: Contract, training: pd.DataFrame) -> dict[str, bytes]:
    """The bundle member of the mean of every column the preprocessing makes of the training
    rows; none for a model that is not a scikit-learn Pipeline."""
    if not hasattr(pipeline, "steps") or len(pipeline.steps) < 2:
        return {}
    transformed = pipeline[:-1].transform(contract.model_frame(training))
    means = np.asarray(transformed.mean(axis=0), dtype="float64").ravel()
    return {BASELINE_MEMBER: json.dumps({"transformed_means": means.tolist()}).encode()}


def credited_columns(preprocess: Any, features: tuple[str, ...]) -> np.ndarray:
    """A 0/1 matrix, transformed columns x features: which feature each transformed column is
    made from, read from the fitted ColumnTransformer that is the preprocessing."""
    from sklearn.compose import ColumnTransformer

    steps = getattr(preprocess, "steps", [("", preprocess)])
    transformer = steps[-1][1]
    if len(steps) > 1 or not isinstance(transformer, ColumnTransformer):
        raise Unexplainable(
            "the preprocessing is not one ColumnTransformer, so its columns cannot be credited "
            "to the contract's features"
        )
    spans = transformer.output_indices_
    matrix = np.zeros((max(span.stop for span in spans.values()), len(features)))
    for branch, fitted, columns in transformer.transformers_:
        span = spans.get(branch, slice(0, 0))
        if fitted == "drop" or span.stop == span.start:
            continue
        inputs = input_names(transformer, columns)
        names = inputs * (span.stop - span.start) if len(inputs) == 1 else []
        names = names or branch_names(fitted, inputs, branch)
        for position, name in zip(range(span.start, span.stop), names, strict=True):
            matrix[position, features.index(made_from(name, inputs, branch))] = 1.0
    return matrix


def input_names(transformer: Any, columns: Any) -> list[str]:
    """A branch's input columns by name, however the branch selected them."""
    if isinstance(columns, str):
        return [columns]
    if all(isinstance(column, str) for column in columns):
        return list(columns)
    return [str(name) for name in np.asarray(transformer.feature_names_in_)[columns]]


def branch_names(fitted: Any, inputs: list[str], branch: str) -> list[str]:
    """The names a branch of several input columns gives its outputs."""
    if fitted == "passthrough":
        return inputs
    try:
        return [str(name) for name in fitted.get_feature_names_out(inputs)]
    except (AttributeError, TypeError, ValueError):
        raise Unexplainable(
            f"the preprocessing branch {branch!r} does not name its columns, so they cannot be "
            f"credited to {', '.join(inputs)}: give it feature names (for a FunctionTransformer, "
            "`feature_names_out`)"
        ) from None


def made_from(name: str, inputs: list[str], branch: str) -> str:
    """The input a branch's output is named after: the same name, or the longest `input_`
    prefix (one-hot `colour_red`, date part `when_year`)."""
    if name in inputs:
        return name
    prefixed = [column for column in inputs if name.startswith(f"{column}_")]
    if not prefixed:
        raise Unexplainable(
            f"the preprocessing branch {branch!r} makes {name!r} from several columns "
            f"({', '.join(inputs)}), so it cannot be credited to one feature"
        )
    return max(prefixed, key=len)


class Explainer:
    """Explains a bundle's pipeline; built once per served version (loading is the cost)."""

    def __init__(self, pipeline: Any, contract: Contract, means: np.ndarray | None) -> None:
        model = pipeline[-1] if hasattr(pipeline, "steps") else pipeline
        family = type(model).__name__
        self.contract = contract
        self.features = tuple(column.name for column in contract.features)
        if not hasattr(pipeline, "steps") or len(pipeline.steps) < 2:
            raise Unexplainable(
                f"a bare {family} without preprocessing steps: explanations need the pipeline"
            )
        self.preprocess = pipeline[:-1]
        self.credits = credited_columns(self.preprocess, self.features)
        self.classes = tuple(str(label) for label in getattr(model, "classes_", ()))
        if type(model).__module__.startswith("sklearn.linear_model") and hasattr(model, "coef_"):
            if means is None:
                raise Unexplainable(
                    f"this bundle has no training means ({BASELINE_MEMBER}), so its {family} "
                    "cannot be explained: package the model again with this version of the code"
                )
            self.raw = self.linear(model, means)
        elif family in TREE_FAMILIES:
            self.raw = self.trees(model)
        else:
            raise Unexplainable(
                f"{family} models cannot be explained: explanations cover linear models "
                "(scikit-learn's linear_model, exactly) and tree ensembles (SHAP)"
            )

    @classmethod
    def of(cls, bundle: Bundle, contract: Contract) -> Explainer:
        """The explainer of a bundle whose origin was verified (its pipeline is unpickled)."""
        member = bundle.members.get(BASELINE_MEMBER)
        means = None if member is None else np.array(json.loads(member)["transformed_means"])
        return cls(bundle.load_model(), contract, means)

    def linear(self, model: Any, means: np.ndarray) -> Any:
        coef = np.atleast_2d(model.coef_)
        intercept = np.atleast_1d(model.intercept_)
        base = intercept + coef @ means
        self.scale = "logit" if len(coef) > 1 else "log_odds" if self.classes else "value"

        def raw(transformed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return (transformed - means)[:, None, :] * coef[None, :, :], base

        return raw

    def trees(self, model: Any) -> Any:
        try:
            import shap
        except ImportError:
            raise Unexplainable(
                f"{type(model).__name__} models are explained with SHAP, which is not installed: "
                f"{INSTALL_SHAP}"
            ) from None
        try:
            explainer = shap.TreeExplainer(model)
        except Exception as error:  # SHAP refuses some variants (multiclass boosting)
            family = type(model).__name__
            raise Unexplainable(f"SHAP cannot explain this {family}: {error}") from None
        output = explainer.model.tree_output
        margin = "logit" if len(self.classes) > 2 else "log_odds"
        self.scale = "value" if not self.classes else {"raw_value": margin}.get(output, output)

        def raw(transformed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            values = np.asarray(explainer.shap_values(transformed, check_additivity=False))
            if values.ndim == 2:
                values = values[:, :, None]
            return values.transpose(0, 2, 1), np.atleast_1d(explainer.expected_value)

        return raw

    def explain(self, inputs: Inputs) -> Explanation:
        import pandas as pd
        import scipy.sparse

        transformed = self.preprocess.transform(pd.DataFrame(inputs))
        if scipy.sparse.issparse(transformed):
            transformed = transformed.toarray()
        values, base = self.raw(np.asarray(transformed, dtype="float64"))
        contributions = values @ self.credits  # rows x outputs x features
        outputs = self.classes or ("",)
        if len(base) == 1 and len(self.classes) == 2:
            outputs = self.classes[1:]  # one output: the second class's log-odds
        positive = self.contract.target.positive
        if len(self.classes) == 2 and positive is not None:
            # Binary: explain toward the positive class only.
            if len(outputs) == 2:
                keep = outputs.index(str(positive))
                contributions, base = contributions[:, keep : keep + 1], base[keep : keep + 1]
            elif outputs[0] != str(positive):
                contributions, base = -contributions, -base
            outputs = (str(positive),)
        return Explanation(self.scale, outputs, self.features, base, contributions)
