"""Evaluate the model on the holdout set: the pipeline's `evaluate` stage.

`python -m <package>.evaluate MODEL_FILE HOLDOUT_CSV REPORTS_DIR` writes `metrics.json` (for
`dvc metrics`), the holdout predictions, and the data behind the ROC curve and confusion matrix
(for `dvc plots`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import joblib
import pandas as pd
from sklearn import metrics
from sklearn.pipeline import Pipeline

from .schema import FEATURE_NAMES, TARGET

# Rounded so that metrics files and their diffs stay readable and stable across platforms.
DECIMALS = 6


def predict(pipeline: Pipeline, frame: pd.DataFrame) -> pd.DataFrame:
    features = frame[list(FEATURE_NAMES)]
    return pd.DataFrame(
        {
            "actual": frame[TARGET].to_numpy(),
            "predicted": pipeline.predict(features),
            "probability": pipeline.predict_proba(features)[:, 1].round(DECIMALS),
        }
    )


def score(predictions: pd.DataFrame) -> dict[str, float | int]:
    actual, predicted = predictions["actual"], predictions["predicted"]
    values = {
        "roc_auc": metrics.roc_auc_score(actual, predictions["probability"]),
        "accuracy": metrics.accuracy_score(actual, predicted),
        "precision": metrics.precision_score(actual, predicted, zero_division=0),
        "recall": metrics.recall_score(actual, predicted, zero_division=0),
        "f1": metrics.f1_score(actual, predicted, zero_division=0),
    }
    return {name: round(float(value), DECIMALS) for name, value in values.items()} | {
        "holdout_rows": len(predictions)
    }


def roc_points(predictions: pd.DataFrame) -> pd.DataFrame:
    fpr, tpr, _ = metrics.roc_curve(predictions["actual"], predictions["probability"])
    return pd.DataFrame({"fpr": fpr.round(DECIMALS), "tpr": tpr.round(DECIMALS)})


def main() -> None:
    parser = argparse.ArgumentParser(description="evaluate: score the model on the holdout set")
    parser.add_argument("model_file", type=Path)
    parser.add_argument("holdout_csv", type=Path)
    parser.add_argument("reports_dir", type=Path)
    args = parser.parse_args()

    predictions = predict(joblib.load(args.model_file), pd.read_csv(args.holdout_csv))
    plots = args.reports_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    results = score(predictions)
    (args.reports_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    predictions.to_csv(args.reports_dir / "predictions.csv", index=False)
    roc_points(predictions).to_csv(plots / "roc.csv", index=False)
    predictions[["actual", "predicted"]].to_csv(plots / "confusion.csv", index=False)
    print(f"evaluate: {json.dumps(results)}")


if __name__ == "__main__":
    main()
