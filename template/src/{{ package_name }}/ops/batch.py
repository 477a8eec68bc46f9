"""Batch scoring: a CSV or Parquet file in, the same format out, in chunks of bounded memory.

Rows are checked against the contract of the model's own bundle. Every output row keeps its input
columns (ids and other pass-through columns included) and gains `prediction`, for classification
one `probability_<class>` column per class, and `model_version`. A row that breaks the contract
goes to a rejects file (CSV, its original values plus `row` and `reason`) instead, so rows in =
rows scored + rows rejected, always. A file that cannot be read as a whole (empty, not UTF-8, a
row with more or fewer fields than the header, a cut Parquet file) is refused with a `BatchError`
and writes nothing: outputs are written under temporary names beside the target and renamed when
the whole input was read; an error, Ctrl-C or SIGTERM removes them, and the next run removes those
of runs that were killed outright. With an inference log, each chunk's scored rows are written to
it as they are scored, under the run's id, each with its position in the file (0-based); the
log is complete when `score` returns.

`score_chunks` is the whole of scoring a stream of rows; this module feeds it one file, and
`distributed.py` feeds it pieces of many files on a Dask cluster, so both give one verdict.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from tqdm import tqdm

from ..contract import Contract, ContractError
from . import explain, storage
from .explain import Explainer
from .inference import InferenceLog
from .models import Answers, Loaded

FORMATS = (".csv", ".parquet")


class BatchError(Exception):
    """The input cannot be scored; the message says why."""


@dataclass
class Counts:
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0


def file_format(path: Path | str) -> str:
    path = Path(path)
    if path.suffix not in FORMATS:
        raise BatchError(f"{path}: use a .csv or .parquet file, not {path.suffix or 'no suffix'}")
    return path.suffix


def first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]


def chunks(path: Path, rows: int, contract: Contract) -> Iterator[pd.DataFrame]:
    """The file's rows, `rows` at a time; at least one frame, so the columns are always known."""
    if file_format(path) == ".csv":
        yield from csv_chunks(path, rows, contract)
        return
    yield from parquet_chunks(parquet_file(path), path, rows)


def parquet_chunks(
    parquet: pq.ParquetFile, name: Path | str, rows: int, row_groups: range | None = None
) -> Iterator[pd.DataFrame]:
    """The rows of a Parquet file (of `row_groups` only, when given), `rows` at a time."""
    if not parquet.metadata.num_rows or (row_groups is not None and not row_groups):
        yield parquet.schema_arrow.empty_table().to_pandas()
    try:
        for batch in parquet.iter_batches(batch_size=rows, row_groups=row_groups):
            yield batch.to_pandas()
    except pa.ArrowException as error:
        raise BatchError(f"{name}: not a readable Parquet file: {first_line(error)}") from None


def parquet_file(path: Path | BinaryIO, name: Path | str | None = None) -> pq.ParquetFile:
    """`path`, or an open file named `name`."""
    try:
        # Read through a small buffer: prebuffering would hold whole row groups (a million rows
        # each by default) in memory, which grows with the file.
        return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    except pa.ArrowException as error:
        reason = first_line(error)
        raise BatchError(f"{name or path}: not a readable Parquet file: {reason}") from None


def csv_chunks(path: Path, rows: int, contract: Contract) -> Iterator[pd.DataFrame]:
    try:
        with pd.read_csv(path, chunksize=rows, **contract.csv_options()) as reader:
            fields = FieldCounts(path)
            read = 0
            for chunk in reader:
                read += len(chunk)
                fields.check(read)
                yield chunk
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise unreadable_csv(path, error) from None


class FieldCounts:
    """Checks that every CSV row has as many fields as the header, a block ahead of pandas,
    whose fast parser pads a short row with empty values. pyarrow's streaming reader tokenizes
    the file as pandas does (quotes, line breaks in quoted values, blank lines skipped) and, with
    only a column that is not there to produce, converts nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        parse = pa_csv.ParseOptions(newlines_in_values=True)
        # One thread: faster here than handing blocks around, and leaves the cores to scoring.
        read = pa_csv.ReadOptions(use_threads=False)
        convert = pa_csv.ConvertOptions(include_columns=["\0"], include_missing_columns=True)
        try:
            self.reader = pa_csv.open_csv(path, read, parse, convert)
        except pa.ArrowInvalid as error:
            raise unreadable_csv(path, error) from None

    def check(self, rows: int) -> None:
        """Checks the rows up to `rows`."""
        while self.rows < rows:
            try:
                self.rows += self.reader.read_next_batch().num_rows
            except StopIteration:
                return
            except pa.ArrowInvalid as error:
                raise unreadable_csv(self.path, error) from None


def unreadable_csv(path: Path, error: Exception) -> BatchError:
    """The first row with more or fewer fields than the header, by the line a text editor shows
    (the csv module knows line breaks in quoted values), or else the parser's reason."""
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header: list[str] = []
        line = 0
        try:
            for fields in reader:
                if fields and not header:
                    header = fields
                elif fields and len(fields) != len(header):
                    return BatchError(
                        f"{path}: line {line + 1} has {len(fields)} fields, "
                        f"the header {len(header)}"
                    )
                line = reader.line_num
        except csv.Error:
            pass  # a field beyond the csv module's size limit, such as an unclosed quote
    return BatchError(f"{path}: not a readable CSV file: {first_line(error)}")


def not_utf8(path: Path) -> BatchError:
    """Names the first line that is not UTF-8 (no UTF-8 character contains a line break)."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode()
            except UnicodeDecodeError as error:
                return BatchError(
                    f"{path}: line {number} is not UTF-8 text (byte {line[error.start]:#04x}); "
                    "save the file as UTF-8"
                )
    return BatchError(f"{path}: not UTF-8 text; save the file as UTF-8")


def total_rows(path: Path) -> int | None:
    """Known cheaply for Parquet (its footer); a CSV would need a full read first."""
    return parquet_file(path).metadata.num_rows if path.suffix == ".parquet" else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class ChunkWriter:
    """Appends frames to a CSV or Parquet file under a hidden temporary name beside it; `close`
    finishes the file, `commit` renames it into place, `discard` removes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temporary = storage.temporary_path(path)
        self.format = file_format(path)
        self.text: TextIO | None = None
        self.parquet: pq.ParquetWriter | None = None

    def write(self, frame: pd.DataFrame) -> None:
        if self.format == ".csv":
            # One open handle: should the file go, writes fail instead of starting a new one.
            header = self.text is None
            if header:
                self.text = self.temporary.open("x", newline="", encoding="utf-8")
            frame.to_csv(self.text, header=header, index=False)
            return
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.parquet is None:
            # Dictionaries pay off for repeated values; for measurements they cost seven
            # times the write time and save nothing.
            repeated = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
            self.parquet = pq.ParquetWriter(self.temporary, table.schema, use_dictionary=repeated)
        self.parquet.write_table(table.cast(self.parquet.schema))

    def close(self, empty: pd.DataFrame) -> None:
        if self.text is None and self.parquet is None:
            self.write(empty)
        self.end()

    def end(self) -> None:
        for open_file in (self.text, self.parquet):
            if open_file is not None:
                open_file.close()

    def commit(self) -> None:
        os.replace(self.temporary, self.path)

    def discard(self) -> None:
        self.end()
        self.temporary.unlink(missing_ok=True)


def score(
    model: Loaded,
    source: Path,
    target: Path,
    rejects: Path,
    chunk_rows: int,
    explainer: Explainer | None = None,
    inference: tuple[InferenceLog, str] | None = None,
) -> Counts:
    """Score `source` into `target`; `inference`: the log and the run's id to record rows under."""
    if chunk_rows < 1:
        raise BatchError("--chunk-rows must be at least 1")
    if source.resolve() == target.resolve():
        raise BatchError("the output must not overwrite the input")
    file_format(source)
    file_format(target)
    if not source.stat().st_size:
        raise BatchError(f"{source}: the file is empty (0 bytes)")
    target.parent.mkdir(parents=True, exist_ok=True)
    leftovers = [
        removed.name
        for written in (target, rejects)
        for removed in storage.remove_leftovers(written.parent, written.name)
    ]
    if leftovers:
        print(
            f"removed {len(leftovers)} temporary file(s) of earlier runs that were killed: "
            + ", ".join(leftovers),
            file=sys.stderr,
        )
    # The CLI turns SIGTERM into KeyboardInterrupt, which removes the temporaries as Ctrl-C does.
    progress = tqdm(total=total_rows(source), unit="rows", disable=not sys.stderr.isatty())
    try:
        return score_chunks(
            model,
            chunks(source, chunk_rows, model.contract),
            source,
            ChunkWriter(target),
            ChunkWriter(rejects),
            explainer,
            inference,
            progress=progress.update,
        )
    finally:
        progress.close()


def score_chunks(
    model: Loaded,
    source_chunks: Iterable[pd.DataFrame],
    source: Path | str,
    scored: ChunkWriter,
    rejected: ChunkWriter,
    explainer: Explainer | None,
    inference: tuple[InferenceLog, str] | None,
    first_row: int = 0,
    progress: Callable[[int], object] | None = None,
) -> Counts:
    """Score chunks of `source` whose first is its row `first_row` (0-based), into `scored`
    and `rejected`, which are committed when every chunk was scored and discarded otherwise."""
    counts = Counts()
    try:
        for chunk in source_chunks:
            try:
                problems = model.contract.problems(chunk, with_target=False, allow_extra=True)
            except ContractError as error:
                raise BatchError(f"{source}: {error}") from None
            positions = problems.index.to_numpy()
            bad = np.zeros(len(chunk), dtype=bool)
            bad[positions] = True
            if bad.any():
                rows = chunk.iloc[positions].astype("string").reset_index(drop=True)
                rows.insert(0, "row", first_row + counts.rows_in + positions + 1)
                rows["reason"] = (problems["column"] + ": " + problems["problem"]).to_numpy()
                rejected.write(rows)
            good = chunk[~bad].copy()
            if len(good):
                typed = model.contract.typed(good, with_target=False)
                answers = model.score(model.contract.model_inputs(typed))
                answered = with_answers(model, good, answers)
                scored.write(with_contributions(explainer, answered) if explainer else answered)
                if inference is not None:
                    log, run_id = inference
                    positions = first_row + counts.rows_in + np.flatnonzero(~bad)
                    log.batch(model, run_id, positions, typed, *answers)
            counts.rows_in += len(chunk)
            counts.rows_scored += len(good)
            counts.rows_rejected += int(bad.sum())
            if progress:
                progress(len(chunk))
        explained = explain.column_names(explainer.features) if explainer else []
        scored.close(pd.DataFrame(columns=[*chunk.columns, *answer_columns(model), *explained]))
        rejected.close(pd.DataFrame(columns=["row", "reason"]))
        # The output last: whoever sees it appear finds its rejects already beside it.
        rejected.commit()
        scored.commit()
    except BaseException:
        scored.discard()
        rejected.discard()
        raise
    return counts


def answer_columns(model: Loaded) -> list[str]:
    return ["prediction", *(f"probability_{label}" for label in model.classes), "model_version"]


def with_answers(model: Loaded, rows: pd.DataFrame, answers: Answers) -> pd.DataFrame:
    """The rows, with the model's answers and version in new columns."""
    labels, probabilities = answers
    rows["prediction"] = labels
    for position, label in enumerate(model.classes):
        rows[f"probability_{label}"] = probabilities[:, position]
    rows["model_version"] = model.version
    return rows


def with_contributions(explainer: Explainer, rows: pd.DataFrame) -> pd.DataFrame:
    """Answered rows, with each feature's contribution (see explain.Explanation.columns)."""
    contract = explainer.contract
    inputs = contract.model_inputs(contract.typed(rows, with_target=False))
    columns = explainer.explain(inputs).columns(rows["prediction"].to_numpy())
    return pd.concat([rows, pd.DataFrame(columns, index=rows.index)], axis=1)
