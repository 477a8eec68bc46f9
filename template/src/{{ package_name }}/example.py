"""The example data set: the Wisconsin breast cancer data that ships inside scikit-learn.

It needs no network, so a new project trains on real data from its first minute. Replace it with
your own data in data/raw/ (then `dvc add data/raw`), and delete this module when nothing uses it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.datasets import load_breast_cancer

from .schema import FEATURE_NAMES, TARGET

RAW_FILE_NAME = "breast_cancer.csv"


def load() -> pd.DataFrame:
    """The 569 biopsies with schema column names; the target is 1 for malignant."""
    dataset = load_breast_cancer(as_frame=True)
    frame = dataset.frame.rename(columns=lambda name: name.replace(" ", "_"))
    # scikit-learn codes benign as 1; the schema's positive class is malignant.
    frame[TARGET] = 1 - frame.pop("target")
    return frame[[*FEATURE_NAMES, TARGET]]


def write_raw_data(raw_dir: Path) -> Path:
    raw_dir.mkdir(parents=True, exist_ok=True)
    path = raw_dir / RAW_FILE_NAME
    load().to_csv(path, index=False)
    return path
