"""The inference log: every record the service and batch scoring scored, and the ground truth.

Layout under `<registry>/<model name>/` (`root` below), on the registry's own filesystem:
    inference/day=YYYY-MM-DD/version=<N>/<HHMMSS>-<16 hex>.parquet  one row per scored record
    feedback/day=YYYY-MM-DD/<HHMMSS>-<16 hex>.parquet                actual outcomes, appended

A row holds `request_id`, `row` (the record's index in its request or file), `time`, `version`
(0 for a bundle file), `source` (service or batch), `status` (200, or the HTTP status of a
refused request, which logs one row without inputs), `latency_ms` (service only), `input.<column>`
for each contract column not excluded by `inference-log-exclude`, `prediction` and, for
classification, `probability.<class>`.

The service never waits for the log: a request appends references to objects it built anyway to
a bounded queue, and a background thread turns them into Parquet every `flush_seconds`. When the
queue is full, rows are dropped and counted; a write that fails is counted and its rows are lost.
Each flush writes whole files (a temporary name and a rename on disk, one PUT on S3), at most
`rows_per_file` rows each, so a reader never sees half a file and a crash loses only the rows of
the last flush interval.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..contract import Boolean, Column, Contract, DateTime, Integer, Numeric, PassThrough
from . import storage
from .audit import Refused
from .models import Loaded
from .settings import Settings

log = logging.getLogger(__name__)

ROWS_PER_FILE = 100_000
MAX_QUEUED_ROWS = 200_000
TIME = pa.timestamp("us", "UTC")
BASE = pa.schema(
    [
        ("request_id", pa.string()),
        ("row", pa.int32()),
        ("time", TIME),
        ("version", pa.int32()),
        ("source", pa.string()),
        ("status", pa.int16()),
        ("latency_ms", pa.float32()),
    ]
)
FEEDBACK = pa.schema(
    [
        ("request_id", pa.string()),
        ("row", pa.int32()),
        ("key", pa.string()),
        ("key_column", pa.string()),
        ("actual", pa.string()),  # float64 for regression
        ("received_at", TIME),
    ]
)


def arrow_type(column: Column) -> pa.DataType:
    """How an input column is kept: numbers, whole numbers and booleans as such, the rest as text
    (date/times as ISO 8601)."""
    if isinstance(column, Numeric):
        return pa.float64()
    if isinstance(column, Integer):
        return pa.int64()
    if isinstance(column, Boolean):
        return pa.bool_()
    return pa.string()


def iso_text(stamps: pa.Array) -> pa.Array:
    return pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%S%z")


def check_excluded(contract: Contract, excluded: Iterable[str]) -> None:
    """Refuse an excluded column the contract does not have: a typo would keep what it meant."""
    unknown = [name for name in excluded if name not in contract.by_name]
    if unknown:
        raise Refused(
            f"[tool.lab2prod] inference-log-exclude names {', '.join(unknown)}, which the "
            f"contract does not have; its columns are {', '.join(contract.names)}"
        )


class Layout:
    """The columns of a version's log files: the same types in every file, values or not."""

    def __init__(self, loaded: Loaded, excluded: Sequence[str]) -> None:
        contract = loaded.contract
        self.version = loaded.version or 0
        # (position in the contract, which is the order of a request record's values, column)
        self.inputs = [
            (position, column)
            for position, column in enumerate(contract.columns)
            if column.name not in excluded
        ]
        self.classification = contract.target.task.is_classification
        self.classes = [str(label) for label in loaded.classes]
        self.no_values = (None,) * len(contract.columns)
        self.no_answer = (None,) * len(self.classes)
        answers = [("prediction", pa.string() if self.classification else pa.float64())]
        answers += [(f"probability.{name}", pa.float64()) for name in self.classes]
        self.schema = pa.schema(
            [*BASE, *((f"input.{c.name}", arrow_type(c)) for _, c in self.inputs), *answers]
        )

    def table(
        self, base: dict[str, Any], inputs: list[pa.Array], answers: list[pa.Array]
    ) -> pa.Table:
        arrays = [pa.array(base[field.name], field.type) for field in BASE]
        return pa.Table.from_arrays([*arrays, *inputs, *answers], schema=self.schema)

    def service_table(self, entries: list[tuple]) -> pa.Table:
        """The rows of queued requests: (request_id, time µs, status, latency ms, records or
        None, answers or None) each. Values are gathered row by row and turned into columns at
        once (`zip`), which is what keeps this cheap."""
        ids, rows, times, statuses, latencies, values, answers = [], [], [], [], [], [], []
        for request_id, when, status, latency, scored, replies in entries:
            if scored:
                count = len(scored)
                values += [tuple(record.__dict__.values()) for record in scored]
                answers += replies
            else:  # refused: no inputs, no answer
                count = 1
                values.append(self.no_values)
                answers.append(None)
            ids += [request_id] * count
            rows += range(count)
            times += [when] * count
            statuses += [status] * count
            latencies += [latency] * count
        base = {
            "request_id": ids,
            "row": rows,
            "time": times,
            "version": [self.version] * len(ids),
            "source": ["service"] * len(ids),
            "status": statuses,
            "latency_ms": latencies,
        }
        columns = list(zip(*values, strict=True))
        inputs = []
        for position, column in self.inputs:
            if isinstance(column, DateTime):
                inputs.append(iso_text(pa.array(columns[position], TIME)))
            elif isinstance(column, PassThrough):  # an id may come as a number
                texts = [None if v is None else str(v) for v in columns[position]]
                inputs.append(pa.array(texts, pa.string()))
            else:
                inputs.append(pa.array(columns[position], arrow_type(column)))
        predictions = [None if answer is None else answer["prediction"] for answer in answers]
        if not self.classification:
            return self.table(base, inputs, [pa.array(predictions, pa.float64())])
        labels = [pa.array([None if p is None else str(p) for p in predictions], pa.string())]
        chances = zip(*(self.no_answer if answer is None else answer["probabilities"].values()
                        for answer in answers), strict=True)  # fmt: skip
        return self.table(base, inputs, labels + [pa.array(c, pa.float64()) for c in chances])

    def batch_table(
        self,
        run_id: str,
        positions: np.ndarray,
        typed: pd.DataFrame,
        labels: np.ndarray,
        probabilities: np.ndarray | None,
    ) -> pa.Table:
        """The rows of one chunk of a scored file, in contract types; `positions`: theirs in
        the file."""
        count = len(typed)
        now = time.time_ns() // 1000
        base = {
            "request_id": [run_id] * count,
            "row": positions,
            "time": [now] * count,
            "version": [self.version] * count,
            "source": ["batch"] * count,
            "status": [200] * count,
            "latency_ms": [None] * count,
        }
        inputs = []
        for _, column in self.inputs:
            if column.name not in typed.columns:  # a pass-through column the file does not have
                inputs.append(pa.nulls(count, arrow_type(column)))
                continue
            values = pa.array(typed[column.name], from_pandas=True)
            if isinstance(column, DateTime):
                values = iso_text(values)
            inputs.append(values.cast(arrow_type(column)))
        if not self.classification:
            return self.table(base, inputs, [pa.array(labels, pa.float64())])
        columns = [pa.array([str(label) for label in labels.tolist()], pa.string())]
        columns += [pa.array(probabilities[:, i], pa.float64()) for i in range(len(self.classes))]
        return self.table(base, inputs, columns)


def new_name(now: datetime) -> str:
    # 64 random bits: replicas writing in the same second never pick the same name.
    return f"{now:%H%M%S}-{uuid.uuid4().hex[:16]}.parquet"


def write_parquet(fs: fsspec.AbstractFileSystem, path: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    storage.put(fs, path, buffer.getvalue())


class InferenceLog:
    """Writes the inference log of one model under `root` on `fs`."""

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        root: str,
        excluded: Sequence[str] = (),
        *,
        flush_seconds: float = 2.0,
        rows_per_file: int = ROWS_PER_FILE,
        max_queued_rows: int = MAX_QUEUED_ROWS,
    ) -> None:
        self.fs, self.root, self.excluded = fs, root, tuple(excluded)
        self.flush_seconds, self.rows_per_file = flush_seconds, rows_per_file
        self.max_queued_rows = max_queued_rows
        self.lock = threading.Lock()
        self.pending: list[tuple[Loaded, tuple]] = []
        self.queued_rows = 0
        self.logged = self.dropped = self.failures = 0  # rows, rows, writes
        self.layouts: dict[int, tuple[Loaded, Layout]] = {}
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    @classmethod
    def of(
        cls, settings: Settings, fs: fsspec.AbstractFileSystem, root: str
    ) -> InferenceLog | None:
        """The project's log, or None when `inference-log` is off."""
        if not settings.inference_log:
            return None
        return cls(
            fs,
            root,
            settings.inference_log_exclude,
            flush_seconds=settings.inference_log_flush_seconds,
        )

    def start(self) -> InferenceLog:
        self.thread = threading.Thread(target=self.run, name="inference-log", daemon=True)
        self.thread.start()
        return self

    def add(
        self,
        loaded: Loaded,
        request_id: str,
        when: int,
        status: int,
        latency_ms: float,
        records: list | None = None,
        answers: list | None = None,
    ) -> None:
        """Queue one request's rows (a refused one: no records); never blocks for long, never
        fails. `when` is in microseconds since 1970."""
        rows = len(records) if records else 1
        with self.lock:
            if self.queued_rows + rows > self.max_queued_rows:
                self.dropped += rows
                return
            self.queued_rows += rows
            self.pending.append((loaded, (request_id, when, status, latency_ms, records, answers)))

    def run(self) -> None:
        while not self.stopping.wait(self.flush_seconds):
            self.flush()

    def close(self) -> None:
        """Stop the thread and write what is queued."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join()
        self.flush()

    def flush(self) -> None:
        with self.lock:
            pending, self.pending, self.queued_rows = self.pending, [], 0
        groups: dict[tuple[int, date], list[tuple]] = {}
        for loaded, entry in pending:
            day = datetime.fromtimestamp(entry[1] / 1e6, UTC).date()
            groups.setdefault((id(loaded), day), []).append(entry)
            if id(loaded) not in self.layouts:
                self.layouts[id(loaded)] = (loaded, Layout(loaded, self.excluded))
        for (key, day), entries in groups.items():
            layout = self.layouts[key][1]
            try:
                self.write(layout.version, day, layout.service_table(entries))
            except Exception:
                self.failures += 1
                log.exception("could not write %d rows of the inference log", len(entries))

    def write(self, version: int, day: date, table: pa.Table) -> None:
        """Write rows to files of at most `rows_per_file` rows."""
        folder = f"{self.root}/inference/day={day.isoformat()}/version={version}"
        for start in range(0, table.num_rows, self.rows_per_file):
            part = table.slice(start, self.rows_per_file)
            write_parquet(self.fs, f"{folder}/{new_name(datetime.now(UTC))}", part)
            self.logged += part.num_rows

    def batch(
        self,
        loaded: Loaded,
        run_id: str,
        positions: np.ndarray,
        typed: pd.DataFrame,
        labels: np.ndarray,
        probabilities: np.ndarray | None,
    ) -> None:
        """Write the rows of a scored chunk now: batch scoring records only what is on disk."""
        layout = Layout(loaded, self.excluded)
        table = layout.batch_table(run_id, positions, typed, labels, probabilities)
        self.write(layout.version, datetime.now(UTC).date(), table)


def days(fs: fsspec.AbstractFileSystem, folder: str) -> dict[date, str]:
    """The day partitions of a folder."""
    try:
        entries = fs.ls(folder, detail=False)
    except FileNotFoundError:
        return {}
    found = {}
    for entry in entries:
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("day="):
            found[date.fromisoformat(name[4:])] = entry
    return found


def read_files(
    fs: fsspec.AbstractFileSystem, paths: list[str], columns: list[str] | None
) -> pd.DataFrame | None:
    tables = []
    for path in paths:
        with fs.open(path, "rb") as handle:
            table = pq.read_table(handle)
        if columns is not None:
            table = table.select([name for name in columns if name in table.column_names])
        tables.append(table)
    if not tables:
        return None
    # Versions with other contracts have other input columns: missing ones are null.
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def files(
    fs: fsspec.AbstractFileSystem,
    root: str,
    start: datetime | None = None,
    end: datetime | None = None,
    version: int | str = "*",
) -> list[str]:
    """The log files of the days from start to end (either open), of one version or all."""
    paths = []
    for day, folder in sorted(days(fs, f"{root}/inference").items()):
        if (start and day < start.astimezone(UTC).date()) or (
            end and day > end.astimezone(UTC).date()
        ):
            continue
        paths += sorted(fs.glob(f"{folder.rstrip('/')}/version={version}/*.parquet"))
    return paths


def read(
    fs: fsspec.AbstractFileSystem,
    root: str,
    start: datetime | None = None,
    end: datetime | None = None,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """The logged rows with start <= time < end (either open), read from whole days."""
    frame = read_files(fs, files(fs, root, start, end), columns)
    if frame is None:
        return BASE.empty_table().to_pandas().reindex(columns=columns or BASE.names)
    keep = np.ones(len(frame), dtype=bool)
    if start is not None:
        keep &= (frame["time"] >= pd.Timestamp(start)).to_numpy()
    if end is not None:
        keep &= (frame["time"] < pd.Timestamp(end)).to_numpy()
    return frame[keep].reset_index(drop=True)


def read_feedback(fs: fsspec.AbstractFileSystem, root: str) -> pd.DataFrame:
    """Every actual outcome recorded so far."""
    paths = [
        path
        for _, folder in sorted(days(fs, f"{root}/feedback").items())
        for path in sorted(fs.glob(f"{folder.rstrip('/')}/*.parquet"))
    ]
    frame = read_files(fs, paths, None)
    return FEEDBACK.empty_table().to_pandas() if frame is None else frame


@dataclass(frozen=True)
class Feedback:
    given: int  # rows in the labels file
    matched: int  # of those, how many found logged rows
    written: int  # feedback rows written (a key may match several logged rows)
    path: str


def read_labels(path: Path, text_columns: list[str]) -> pd.DataFrame:
    if path.suffix == ".csv":
        # Ids and keys as written ("007" keeps its zeros).
        return pd.read_csv(path, dtype=dict.fromkeys(text_columns, str), keep_default_na=False,
                           na_values={name: [""] for name in text_columns})  # fmt: skip
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    raise Refused(f"{path}: use a .csv or .parquet file, not {path.suffix or 'no suffix'}")


def actual_values(
    contract: Contract, labels: pd.DataFrame, column_name: str, path: Path
) -> pa.Array:
    """The actual outcomes checked against the contract's target: a known class, or a number
    within the target's range."""
    target = contract.target
    column = target.column()
    raw = labels[column_name]
    parsed = column.parse(raw)
    problems = [(parsed.isna(), lambda value: f"not {column.what_it_is()}: {value!r}")]
    problems += column.value_checks(parsed)
    for failed, describe in problems:
        bad = np.flatnonzero(failed.to_numpy(dtype=bool, na_value=False))
        if len(bad):
            raise Refused(
                f"{path}: row {bad[0] + 1}, {column_name}: {describe(raw.iloc[bad[0]])} "
                f"(the actual values of {target.name})"
            )
    if target.task.is_classification:
        return pa.array(parsed.astype("string"), pa.string(), from_pandas=True)
    return pa.array(parsed, pa.float64(), from_pandas=True)


def row_numbers(raw: pd.Series, path: Path) -> np.ndarray:
    """The `row` column: whole numbers from 0, each naming a record of its request."""
    numbers = pd.to_numeric(raw, errors="coerce")
    bad = np.flatnonzero(~(numbers.notna() & (numbers >= 0) & (numbers % 1 == 0)).to_numpy())
    if len(bad):
        raise Refused(
            f"{path}: row {bad[0] + 1}, row: {raw.iloc[bad[0]]!r} is not a record's position "
            "in its request (a whole number from 0)"
        )
    return numbers.to_numpy(dtype="int64")


def text(values: pd.Series) -> pd.Series:
    """Ids and keys as the log holds them: text (a whole number read as 3.0 is "3")."""
    if pd.api.types.is_float_dtype(values.dtype):
        values = values.map(
            lambda v: str(int(v)) if float(v).is_integer() else repr(v), na_action="ignore"
        )
    return values.astype("string")


def record_feedback(
    fs: fsspec.AbstractFileSystem,
    root: str,
    contract: Contract,
    path: Path,
    key: str | None = None,
    actual: str | None = None,
) -> Feedback:
    """Attach the actual outcomes in a labels file to logged rows, by `request_id` (and `row`,
    default 0) or by a pass-through column `key`, and append them to the feedback log."""
    actual = actual or contract.target.name
    wanted = [key] if key else ["request_id"]
    try:
        labels = read_labels(path, [*wanted, "row"])
    except FileNotFoundError:
        raise Refused(f"no file {path}") from None
    except (ValueError, pa.ArrowException) as error:
        raise Refused(f"{path}: not a readable labels file: {str(error).splitlines()[0]}") from None
    missing = [name for name in [*wanted, actual] if name not in labels.columns]
    if missing:
        raise Refused(
            f"{path}: no column {', '.join(missing)}; it has {', '.join(map(str, labels.columns))}"
            + ("" if key else " (name a pass-through column with --key to match on it)")
        )
    if key:
        column = contract.by_name.get(key)
        if not isinstance(column, PassThrough):
            passing = [c.name for c in contract.columns if isinstance(c, PassThrough)]
            raise Refused(
                f"--key {key} is not a pass-through column of the contract"
                f" (those are: {', '.join(passing) or 'none'})"
            )
    values = actual_values(contract, labels, actual, path)
    given = pd.DataFrame({"actual": values.to_pandas(), "position": np.arange(len(labels))})
    if key:
        given["key"] = text(labels[key]).to_numpy()
        logged = read(fs, root, columns=["request_id", "row", f"input.{key}"])
        if f"input.{key}" not in logged.columns:
            raise Refused(
                f"{key} is not in the inference log (inference-log-exclude leaves it out)"
            )
        logged = logged.rename(columns={f"input.{key}": "key"}).dropna(subset="key")
        matched = given.merge(logged.drop_duplicates(), on="key")
        matched["key_column"] = key
    else:
        given["request_id"] = text(labels["request_id"]).to_numpy()
        given["row"] = row_numbers(labels["row"], path) if "row" in labels.columns else 0
        logged = read(fs, root, columns=["request_id", "row"]).drop_duplicates()
        matched = given.merge(logged, on=["request_id", "row"])
        matched["key"] = None
        matched["key_column"] = None
    if matched.empty:
        what = f"{key} values" if key else "request ids"
        raise Refused(
            f"{path}: none of its {len(labels)} {what} match a logged request; check the ids "
            "(the X-Request-ID header the service echoed, or a batch run's id) and that the "
            "inference log is on where they were scored"
        )
    now = datetime.now(UTC)
    matched["received_at"] = now
    table = pa.Table.from_pandas(matched[FEEDBACK.names], preserve_index=False)
    if not contract.target.task.is_classification:
        table = table.cast(FEEDBACK.set(4, pa.field("actual", pa.float64())))
    else:
        table = table.cast(FEEDBACK)
    target = f"{root}/feedback/day={now.date().isoformat()}/{new_name(now)}"
    write_parquet(fs, target, table)
    return Feedback(len(labels), matched["position"].nunique(), len(matched), target)
