"""Load raw data, check it against the contract, and split it into training and holdout sets.

`python -m <package>.data RAW_DIR OUT_DIR` is the pipeline's `prepare` stage. It reads every CSV
and Parquet file in RAW_DIR (in name order), checks each row against `schema.CONTRACT`, and
writes `train.parquet` and `holdout.parquet` in the contract's types, and `reports/prepare.json`
with the row counts. An invalid row is handled as `prepare.invalid_rows` in params.yaml says:
`stop` names its file, line and column and fails; `quarantine` writes it with its reason to
OUT_DIR/rejects.csv and goes on, failing only when more than `prepare.max_rejected_share` of the
rows were rejected.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from . import params
from .contract import ContractError, PassThrough
from .schema import CONTRACT

POLICIES = ("stop", "quarantine")
QUALITY_FILE = Path("reports/prepare.json")


class DataError(ValueError):
    """Data that breaks the contract; the message names the file, line and column."""


def read_table(path: Path) -> pd.DataFrame:
    """A raw file, read as the contract says (its values are checked afterwards)."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, **CONTRACT.csv_options())


def record_lines(path: Path) -> np.ndarray:
    """The line each data record of a CSV file starts on (quoted fields may span lines)."""
    starts = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader, None)  # the header
        line = reader.line_num
        for record in reader:
            if record:  # pandas skips blank lines too
                starts.append(line + 1)
            line = reader.line_num
    return np.array(starts)


def check(frame: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid rows in contract types, rejected rows with `file`, `line`, `reason`)."""
    try:
        problems = CONTRACT.problems(frame)
    except ContractError as error:
        raise DataError(f"{path}: {error}") from None
    bad = problems.index.to_numpy()
    rejects = frame.iloc[bad].astype("string").reset_index(drop=True)
    where = record_lines(path)[bad] if path.suffix == ".csv" else bad + 1
    rejects.insert(0, "file", str(path))
    rejects.insert(1, "line" if path.suffix == ".csv" else "row", where)
    rejects["reason"] = (problems["column"] + ": " + problems["problem"]).to_numpy()
    valid = frame.drop(index=frame.index[bad])
    return CONTRACT.typed(valid), rejects


def load_raw(raw_dir: Path, policy: str) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Every file in raw_dir, checked and stacked in name order: (valid, rejects, rows read)."""
    files = sorted(path for path in raw_dir.iterdir() if path.suffix in (".csv", ".parquet"))
    if not files:
        raise DataError(f"{raw_dir}: no CSV or Parquet files; put the raw data there, `dvc add`")
    valid, rejects, rows = [], [], 0
    for path in files:
        frame = read_table(path)
        rows += len(frame)
        good, bad = check(frame, path)
        if len(bad) and policy == "stop":
            first = bad.iloc[0]
            place = f"line {first['line']}" if "line" in bad else f"row {first['row']}"
            more = len(bad) - 1
            others = f" ({more} more invalid row{'s' if more > 1 else ''} after it)" if more else ""
            raise DataError(f"{path}: {place}: {first['reason']}{others}")
        valid.append(good)
        rejects.append(bad)
    return pd.concat(valid, ignore_index=True), pd.concat(rejects, ignore_index=True), rows


def split(
    frame: pd.DataFrame, *, holdout_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A split that keeps each class's share in both sets when every class has two rows."""
    target = frame[CONTRACT.target.name]
    stratify = (
        target
        if CONTRACT.target.task.is_classification and target.value_counts().min() >= 2
        else None
    )
    train, holdout = train_test_split(
        frame, test_size=holdout_fraction, random_state=seed, stratify=stratify
    )
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="prepare: validate and split the raw data")
    parser.add_argument("raw_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    settings = params.load("prepare")
    policy = settings.get("invalid_rows", "stop")
    if policy not in POLICIES:
        raise SystemExit("prepare: params.yaml prepare.invalid_rows must be stop or quarantine")

    try:
        frame, rejects, rows = load_raw(args.raw_dir, policy)
    except DataError as error:
        raise SystemExit(f"prepare: invalid raw data: {error}") from None
    share = len(rejects) / rows if rows else 0.0
    limit = settings.get("max_rejected_share", 0.01)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rejects.to_csv(args.out_dir / "rejects.csv", index=False)
    QUALITY_FILE.parent.mkdir(parents=True, exist_ok=True)
    quality = {"rows_read": rows, "rows_rejected": len(rejects), "rejected_share": round(share, 6)}
    QUALITY_FILE.write_text(json.dumps(quality, indent=2) + "\n")
    if share > limit:
        raise SystemExit(
            f"prepare: {len(rejects)} of {rows} rows ({100 * share:.1f} %) broke the contract, "
            f"more than prepare.max_rejected_share ({100 * limit:.1f} %); see "
            f"{args.out_dir / 'rejects.csv'}"
        )
    train, holdout = split(
        frame, holdout_fraction=settings["holdout_fraction"], seed=settings["seed"]
    )
    train.to_parquet(args.out_dir / "train.parquet", index=False)
    holdout.to_parquet(args.out_dir / "holdout.parquet", index=False)
    kept = ", ".join(c.name for c in CONTRACT.columns if isinstance(c, PassThrough))
    print(
        f"prepare: {len(train)} training rows, {len(holdout)} holdout rows, "
        f"{len(rejects)} rejected" + (f"; kept {kept} without feeding the model" if kept else "")
    )


if __name__ == "__main__":
    main()
