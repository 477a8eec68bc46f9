"""Load raw data, check it against the schema, and split it into training and holdout sets.

`python -m <package>.data RAW_DIR OUT_DIR` is the pipeline's `prepare` stage: it reads every CSV
file in RAW_DIR (in name order), validates each one, and writes `train.csv` and `holdout.csv`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from . import params
from .schema import FEATURE_NAMES, TARGET, SchemaError, row_problems


class DataError(ValueError):
    """Data that breaks the schema; the message names the file, column and row."""


def validate(frame: pd.DataFrame, *, source: str, with_target: bool = True) -> pd.DataFrame:
    """Return the frame in schema order and types, or raise DataError naming the first bad row."""
    try:
        problems = row_problems(frame, with_target=with_target)
    except SchemaError as error:
        raise DataError(f"{source}: {error}") from None
    if not problems.empty:
        position = int(problems.index[0])
        first = problems.iloc[0]
        others = len(problems) - 1
        more = f" ({others} more invalid row{'s' if others > 1 else ''} after it)" if others else ""
        raise DataError(
            f"{source}: row {position + 1} (line {position + 2}), column '{first['column']}': "
            f"{first['problem']}{more}"
        )
    columns = [*FEATURE_NAMES, TARGET] if with_target else list(FEATURE_NAMES)
    valid = frame[columns].astype(dict.fromkeys(FEATURE_NAMES, "float64"))
    if with_target:
        valid[TARGET] = valid[TARGET].astype("int64")
    return valid


def load_raw(raw_dir: Path) -> pd.DataFrame:
    """Every CSV in raw_dir, validated and stacked in file-name order."""
    files = sorted(raw_dir.glob("*.csv"))
    if not files:
        raise DataError(f"{raw_dir}: no CSV files; put the raw data there and `dvc add` it")
    frames = [validate(pd.read_csv(path), source=str(path)) for path in files]
    return pd.concat(frames, ignore_index=True)


def split(
    frame: pd.DataFrame, *, holdout_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A stratified split, so both sets keep the share of positives."""
    train, holdout = train_test_split(
        frame, test_size=holdout_fraction, random_state=seed, stratify=frame[TARGET]
    )
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="prepare: validate and split the raw data")
    parser.add_argument("raw_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    settings = params.load("prepare")

    try:
        frame = load_raw(args.raw_dir)
    except DataError as error:
        raise SystemExit(f"prepare: invalid raw data: {error}") from None
    train, holdout = split(
        frame, holdout_fraction=settings["holdout_fraction"], seed=settings["seed"]
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    train.to_csv(args.out_dir / "train.csv", index=False)
    holdout.to_csv(args.out_dir / "holdout.csv", index=False)
    print(f"prepare: {len(train)} training rows, {len(holdout)} holdout rows")


if __name__ == "__main__":
    main()
