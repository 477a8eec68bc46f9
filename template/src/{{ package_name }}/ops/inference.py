"""The inference log and ground truth, read back: Parquet files on the registry's filesystem.

    <root>/inference/day=YYYY-MM-DD/version=<N>/<HHMMSS>-<8 hex>.parquet   what was scored
    <root>/feedback/day=YYYY-MM-DD/<HHMMSS>-<8 hex>.parquet               actual outcomes

`root` is the model's folder in the registry (`Registry.root`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd


def days(start: datetime, end: datetime) -> list[str]:
    first, last = start.date(), end.date()
    return [str(first + timedelta(days=n)) for n in range((last - first).days + 1)]


def frames(fs, paths: list[str]) -> pd.DataFrame:
    import pyarrow.parquet as pq

    tables = []
    for path in sorted(paths):
        with fs.open(path, "rb") as handle:
            tables.append(pq.read_table(handle).to_pandas())
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def files(fs, root: str, start: datetime, end: datetime, version: int | str = "*") -> list[str]:
    """The log files of the days from start to end (of one version, or all)."""
    return sorted(
        path
        for day in days(start, end)
        for path in fs.glob(f"{root}/inference/day={day}/version={version}/*.parquet")
    )


def read(fs, root: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Every logged row with start <= time < end (both aware datetimes), reading only their
    days' files."""
    frame = frames(fs, files(fs, root, start, end))
    if frame.empty:
        return frame
    return frame[(frame["time"] >= start) & (frame["time"] < end)].reset_index(drop=True)


def read_feedback(fs, root: str) -> pd.DataFrame:
    """Every ground-truth row received."""
    return frames(fs, fs.glob(f"{root}/feedback/day=*/*.parquet"))
