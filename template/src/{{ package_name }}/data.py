"""Load raw data, check it against the schema, and split it into training and holdout sets.

`python -m <package>.data RAW_DIR OUT_DIR` is the pipeline's `prepare` stage: it reads every CSV
file in RAW_DIR (in name order), validates each one, and writes `train.csv` and `holdout.csv`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.model_selection import train_test_split

from . import params
from .schema import FEATURE_NAMES, FEATURES, TARGET, TARGET_VALUES

FEATURES_BY_NAME = {feature.name: feature for feature in FEATURES}


class DataError(ValueError):
    """Data that breaks the schema; the message names the file, column and row."""


def row_problems(frame: pd.DataFrame, *, with_target: bool = True) -> pd.DataFrame:
    """The first problem of every invalid row: columns `column` and `problem`, indexed by row
    position (0-based); empty when every row is valid.

    Column problems (a missing or unknown column) concern the whole file and raise DataError.
    """
    expected = [*FEATURE_NAMES, TARGET] if with_target else list(FEATURE_NAMES)
    missing = [name for name in expected if name not in frame.columns]
    if missing:
        raise DataError(f"missing column(s): {', '.join(missing)}")
    unknown = [name for name in frame.columns if name not in expected]
    if unknown:
        raise DataError(
            f"unknown column(s): {', '.join(map(str, unknown))}; schema.py lists the columns"
        )

    found = pd.DataFrame({"column": pd.NA, "problem": pd.NA}, index=range(len(frame)))
    for name in expected:
        raw = frame[name].reset_index(drop=True)
        for failed, describe in value_checks(name, raw):
            new = failed & found["problem"].isna()
            found.loc[new, "column"] = name
            found.loc[new, "problem"] = [describe(value) for value in raw[new]]
    return found.dropna()


def value_checks(name: str, raw: pd.Series) -> list[tuple[pd.Series, Callable[[Any], str]]]:
    """(rows that fail, how to describe a failing value) for each rule of a column, in order."""
    values = pd.to_numeric(raw, errors="coerce")
    checks = [
        (raw.isna(), lambda _: "missing"),
        (values.isna() & raw.notna(), lambda value: f"not a number: {value}"),
    ]
    if name == TARGET:
        allowed = ", ".join(map(str, TARGET_VALUES))
        not_allowed = values.notna() & ~values.isin(TARGET_VALUES)
        return [*checks, (not_allowed, lambda value: f"{value} is not {allowed}")]
    feature = FEATURES_BY_NAME[name]
    return [
        *checks,
        (values < feature.minimum, lambda value: f"{value} is below the minimum {feature.minimum}"),
        (values > feature.maximum, lambda value: f"{value} is above the maximum {feature.maximum}"),
    ]


def validate(frame: pd.DataFrame, *, source: str, with_target: bool = True) -> pd.DataFrame:
    """Return the frame in schema order and types, or raise DataError naming the first bad row."""
    try:
        problems = row_problems(frame, with_target=with_target)
    except DataError as error:
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
