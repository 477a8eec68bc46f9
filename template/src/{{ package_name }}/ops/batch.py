"""Batch scoring: a CSV or Parquet file in, the same format out, in chunks of bounded memory.

Rows are checked against the contract of the model's own bundle. Every output row keeps its input
columns (ids and other pass-through columns included) and gains `prediction`, for classification
one `probability_<class>` column per class, and `model_version`. A row that breaks the contract
goes to a rejects file (CSV, its original values plus `row` and `reason`) instead, so rows in =
rows scored + rows rejected, always. Outputs are
written under temporary names and renamed when complete: a failed run leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from ..contract import Contract, ContractError
from .models import Loaded

FORMATS = (".csv", ".parquet")


class BatchError(Exception):
    """The input cannot be scored; the message says why."""


@dataclass
class Counts:
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0


def file_format(path: Path) -> str:
    if path.suffix not in FORMATS:
        raise BatchError(f"{path}: use a .csv or .parquet file, not {path.suffix or 'no suffix'}")
    return path.suffix


def chunks(path: Path, rows: int, contract: Contract) -> Iterator[pd.DataFrame]:
    if file_format(path) == ".csv":
        yield from pd.read_csv(path, chunksize=rows, **contract.csv_options())
    else:
        # Read through a small buffer: prebuffering would hold whole row groups (a million rows
        # each by default) in memory, which grows with the file.
        parquet = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
        for batch in parquet.iter_batches(batch_size=rows):
            yield batch.to_pandas()


def total_rows(path: Path) -> int | None:
    """Known cheaply for Parquet (its footer); a CSV would need a full read first."""
    return pq.ParquetFile(path).metadata.num_rows if path.suffix == ".parquet" else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class ChunkWriter:
    """Appends frames to a CSV or Parquet file under a temporary name; `commit` renames it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temporary = path.with_name(f".{path.name}.partial")
        self.format = file_format(path)
        self.parquet: pq.ParquetWriter | None = None
        self.started = False

    def write(self, frame: pd.DataFrame) -> None:
        if self.format == ".csv":
            frame.to_csv(
                self.temporary,
                mode="a" if self.started else "w",
                header=not self.started,
                index=False,
            )
        else:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self.parquet is None:
                # Dictionaries pay off for repeated values; for measurements they cost seven
                # times the write time and save nothing.
                repeated = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
                self.parquet = pq.ParquetWriter(
                    self.temporary, table.schema, use_dictionary=repeated
                )
            self.parquet.write_table(table.cast(self.parquet.schema))
        self.started = True

    def commit(self, empty: pd.DataFrame) -> None:
        if not self.started:
            self.write(empty)
        if self.parquet is not None:
            self.parquet.close()
        os.replace(self.temporary, self.path)

    def discard(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
        self.temporary.unlink(missing_ok=True)


def score(model: Loaded, source: Path, target: Path, rejects: Path, chunk_rows: int) -> Counts:
    if source.resolve() == target.resolve():
        raise BatchError("the output must not overwrite the input")
    file_format(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    counts = Counts()
    scored, rejected = ChunkWriter(target), ChunkWriter(rejects)
    progress = tqdm(total=total_rows(source), unit="rows", disable=not sys.stderr.isatty())
    try:
        for chunk in chunks(source, chunk_rows, model.contract):
            try:
                problems = model.contract.problems(chunk, with_target=False, allow_extra=True)
            except ContractError as error:
                raise BatchError(f"{source}: {error}") from None
            positions = problems.index.to_numpy()
            bad = np.zeros(len(chunk), dtype=bool)
            bad[positions] = True
            if bad.any():
                rows = chunk.iloc[positions].astype("string").reset_index(drop=True)
                rows.insert(0, "row", counts.rows_in + positions + 1)
                rows["reason"] = (problems["column"] + ": " + problems["problem"]).to_numpy()
                rejected.write(rows)
            good = chunk[~bad].copy()
            if len(good):
                scored.write(with_answers(model, good))
            counts.rows_in += len(chunk)
            counts.rows_scored += len(good)
            counts.rows_rejected += int(bad.sum())
            progress.update(len(chunk))
        scored.commit(empty_output(source, model))
        rejected.commit(pd.DataFrame(columns=["row", "reason"]))
    except BaseException:
        scored.discard()
        rejected.discard()
        raise
    finally:
        progress.close()
    return counts


def answer_columns(model: Loaded) -> list[str]:
    return ["prediction", *(f"probability_{label}" for label in model.classes), "model_version"]


def with_answers(model: Loaded, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows, with the model's answers and version in new columns."""
    contract = model.contract
    labels, probabilities = model.score(
        contract.model_inputs(contract.typed(rows, with_target=False))
    )
    rows["prediction"] = labels
    for position, label in enumerate(model.classes):
        rows[f"probability_{label}"] = probabilities[:, position]
    rows["model_version"] = model.version
    return rows


def empty_output(source: Path, model: Loaded) -> pd.DataFrame:
    """The output's columns when no row was valid."""
    columns = (
        next(chunks(source, 1, model.contract)).columns.tolist() if source.stat().st_size else []
    )
    return pd.DataFrame(columns=[*columns, *answer_columns(model)])
