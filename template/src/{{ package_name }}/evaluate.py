"""Evaluate the model on the holdout set: the pipeline's `evaluate` stage.

`python -m <package>.evaluate MODEL_FILE HOLDOUT_FILE REPORTS_DIR` writes `metrics.json` (for
`dvc metrics`; the task's metrics from tasks.py), the holdout predictions, and the data behind the
plots that fit the task (for `dvc plots`): ROC and precision-recall curves and a confusion matrix
for binary, a confusion matrix for multiclass, predicted against actual values for regression.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import joblib
import pandas as pd
from sklearn import metrics

from . import tasks
from .schema import CONTRACT

DECIMALS = tasks.DECIMALS


def predict(pipeline, holdout: pd.DataFrame) -> tuple[pd.DataFrame, tasks.Predictions]:
    """The holdout's actual and predicted values (and each class's probability)."""
    target = CONTRACT.target
    predictions = tasks.predict(pipeline, CONTRACT.model_frame(holdout), target.task)
    table = pd.DataFrame(
        {"actual": target.to_model(holdout[target.name]), "predicted": predictions.predicted}
    )
    if predictions.probabilities is not None:
        for position, label in enumerate(predictions.classes):
            table[f"probability_{label}"] = predictions.probabilities[:, position].round(DECIMALS)
    else:
        table["predicted"] = table["predicted"].round(DECIMALS)
    return table, predictions


def plots(table: pd.DataFrame, predictions: tasks.Predictions) -> dict[str, pd.DataFrame]:
    target = CONTRACT.target
    if target.task is tasks.Task.REGRESSION:
        residual = (table["actual"] - table["predicted"]).round(DECIMALS)
        return {"residuals.csv": table[["actual", "predicted"]].assign(residual=residual)}
    shown = {"confusion.csv": table[["actual", "predicted"]]}
    if target.task is tasks.Task.BINARY:
        flagged = table[f"probability_{target.positive}"]
        caught = table["actual"] == target.positive
        fpr, tpr, _ = metrics.roc_curve(caught, flagged)
        precision, recall, _ = metrics.precision_recall_curve(caught, flagged)
        shown["roc.csv"] = pd.DataFrame({"fpr": fpr, "tpr": tpr}).round(DECIMALS)
        shown["precision_recall.csv"] = pd.DataFrame(
            {"recall": recall, "precision": precision}
        ).round(DECIMALS)
    return shown


def main() -> None:
    parser = argparse.ArgumentParser(description="evaluate: score the model on the holdout set")
    parser.add_argument("model_file", type=Path)
    parser.add_argument("holdout_file", type=Path)
    parser.add_argument("reports_dir", type=Path)
    args = parser.parse_args()

    holdout = pd.read_parquet(args.holdout_file)
    table, predictions = predict(joblib.load(args.model_file), holdout)
    target = CONTRACT.target
    results = tasks.score(target.to_model(holdout[target.name]), predictions, target)
    results["holdout_rows"] = len(holdout)
    plot_dir = args.reports_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    (args.reports_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    table.to_csv(args.reports_dir / "predictions.csv", index=False)
    for name, data in plots(table, predictions).items():
        data.to_csv(plot_dir / name, index=False)
    print(f"evaluate: {json.dumps(results)}")


if __name__ == "__main__":
    main()
