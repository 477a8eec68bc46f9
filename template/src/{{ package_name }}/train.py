"""Train the model: `python -m <package>.train TRAIN_CSV MODEL_FILE`, the `train` stage.

The saved artifact is one scikit-learn Pipeline, preprocessing included, so what is evaluated,
packaged and served is the same object. Training is deterministic: the same data and params give
a bit-identical model file.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from . import params
from .features import preprocessing_steps
from .schema import FEATURE_NAMES, TARGET


def build_pipeline(settings: dict[str, Any]) -> Pipeline:
    model = LogisticRegression(
        C=settings["C"], max_iter=settings["max_iter"], random_state=settings["seed"]
    )
    return Pipeline([*preprocessing_steps(), ("model", model)])


def train(frame: pd.DataFrame, settings: dict[str, Any]) -> Pipeline:
    pipeline = build_pipeline(settings)
    pipeline.fit(frame[list(FEATURE_NAMES)], frame[TARGET])
    return pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description="train: fit the model pipeline")
    parser.add_argument("train_csv", type=Path)
    parser.add_argument("model_file", type=Path)
    args = parser.parse_args()

    pipeline = train(pd.read_csv(args.train_csv), params.load("train"))
    args.model_file.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, args.model_file)
    print(f"train: saved {args.model_file}")


if __name__ == "__main__":
    main()
