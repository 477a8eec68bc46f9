"""Train the model: `python -m <package>.train TRAIN_FILE MODEL_FILE`, the `train` stage.

The saved artifact is one scikit-learn Pipeline, preprocessing included, so what is evaluated,
packaged and served is the same object. It takes the contract's model inputs
(`CONTRACT.model_frame`). Training is deterministic: the same data and params give a bit-identical
model file.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from sklearn.pipeline import Pipeline

from . import params
from .features import preprocessing
from .schema import CONTRACT
from .tasks import default_estimator


def build_pipeline(settings: dict[str, Any]) -> Pipeline:
    model = default_estimator(CONTRACT.target.task, settings)
    return Pipeline([("preprocess", preprocessing()), ("model", model)])


def train(frame: pd.DataFrame, settings: dict[str, Any]) -> Pipeline:
    """Fit on rows in contract types (as `prepare` writes them)."""
    target = CONTRACT.target
    pipeline = build_pipeline(settings)
    pipeline.fit(CONTRACT.model_frame(frame), target.to_model(frame[target.name]))
    return pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description="train: fit the model pipeline")
    parser.add_argument("train_file", type=Path)
    parser.add_argument("model_file", type=Path)
    args = parser.parse_args()

    pipeline = train(pd.read_parquet(args.train_file), params.load("train"))
    args.model_file.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, args.model_file)
    print(f"train: saved {args.model_file}")


if __name__ == "__main__":
    main()
