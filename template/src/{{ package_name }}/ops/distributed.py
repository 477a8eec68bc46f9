"""Batch scoring on a Dask cluster: many CSV or Parquet files (a folder or a glob, on disk or in
object storage) scored by `batch.score_chunks`, a piece per task.

A piece is one CSV file, or a run of whole row groups of a Parquet file of at most `piece_rows`
rows (or one larger group), so a file larger than a worker's memory is shared out. Every worker
process checks the bundle bytes the client verified against their sha256 and loads the model
once.

Output: `OUTPUT/part-NNNNN.parquet` (scored rows), `OUTPUT/_rejects/part-NNNNN.csv` (rejected
rows: `row` in its input file, the original values, `reason`), and `OUTPUT/_SUCCESS`, a JSON
manifest naming each part's input file, first row, counts and sha256. Parts are written under a
hidden staging name first (readers of Parquet datasets skip names starting with `.` or `_`) and a
part's name is its piece's number, so a task retried after its worker died overwrites its own
part. Only when every piece was scored does the output appear: on disk by renaming the staging
folder to OUTPUT in one step; on object storage by copying the parts into place and writing
`_SUCCESS` last, so there a reader waits for `_SUCCESS` and reads the parts it lists. A failure
removes the staging (and any part already copied) and leaves nothing visible.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
import pyarrow as pa

from . import batch, storage
from .audit import sha256
from .batch import BatchError, ChunkWriter, Counts
from .bundle import Bundle
from .explain import Explainer
from .inference import InferenceLog
from .models import Loaded, load

PIECE_ROWS = 1_000_000
# What a worker must share with the client to give the same answers.
LIBRARIES = ("numpy", "pandas", "pyarrow", "scikit-learn", "onnxruntime", "dask", "distributed")


@dataclass(frozen=True)
class Piece:
    number: int  # names its parts
    file: int  # the input's position in the run's list of inputs
    url: str
    first_row: int  # 0-based, in its file
    row_groups: tuple[int, int] | None = None  # [start, stop) of a Parquet file; None: all of it


@dataclass(frozen=True)
class Job:
    """What every task needs besides its piece."""

    staging: str  # URL of the hidden folder the parts are written to
    bundle_sha256: str
    version: int | None
    chunk_rows: int
    explain: bool
    inference: tuple[str, tuple[str, ...], str] | None  # the log's URL, excluded columns, run id


@dataclass
class Result:
    counts: Counts
    inputs: list[dict[str, str]]  # url, sha256
    parts: list[dict[str, Any]] = field(default_factory=list)
    scheduler: str = ""
    workers: int = 0


def input_files(pattern: str) -> list[str]:
    """The CSV and Parquet files of a folder (at any depth, hidden ones left out) or a glob."""
    fs, path = fsspec.core.url_to_fs(pattern)
    if fs.isdir(path):
        found = [
            name
            for name in fs.find(path)
            if not any(part[0] in "._" for part in PurePosixPath(name).relative_to(path).parts)
        ]
    else:
        found = fs.glob(path) if fsspec.core.has_magic(path) else []
    found = [name for name in found if PurePosixPath(name).suffix in batch.FORMATS]
    if not found:
        raise BatchError(f"{pattern}: no .csv or .parquet file there")
    return [name if storage.is_local(fs) else fs.unstrip_protocol(name) for name in sorted(found)]


def pieces(urls: list[str], piece_rows: int) -> list[Piece]:
    """Split the inputs; reads the footer of each Parquet file, so a broken one stops here."""
    planned: list[Piece] = []
    for number, url in enumerate(urls):
        fs, path = fsspec.core.url_to_fs(url)
        if not fs.size(path):
            raise BatchError(f"{url}: the file is empty (0 bytes)")
        if batch.file_format(path) == ".csv":
            planned.append(Piece(len(planned), number, url, 0))
            continue
        with fs.open(path, "rb") as handle:
            groups = batch.parquet_file(handle, url).metadata
        start = first_row = rows = 0
        for group in range(groups.num_row_groups):
            size = groups.row_group(group).num_rows
            if rows and rows + size > piece_rows:
                planned.append(Piece(len(planned), number, url, first_row, (start, group)))
                start, first_row, rows = group, first_row + rows, 0
            rows += size
        planned.append(Piece(len(planned), number, url, first_row, (start, groups.num_row_groups)))
    return planned


def versions() -> dict[str, str | None]:
    """This process's versions of the package and the libraries that compute answers."""
    package = __package__.split(".")[0]
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in (package, *LIBRARIES):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def check_workers(client: Any) -> None:
    """Refuse workers that do not run the client's environment: their answers could differ."""
    ours = versions()
    try:
        theirs = client.run(versions)
    except Exception as error:  # the function cannot even be unpickled where the package is not
        raise BatchError(
            f"the Dask workers cannot run {__package__.split('.')[0]} ({error}); start them in "
            "the project's locked environment"
        ) from None
    for worker, found in theirs.items():
        differing = [f"{name} {found.get(name)} (here {ours[name]})"
                     for name in ours if found.get(name) != ours[name]]  # fmt: skip
        if differing:
            raise BatchError(
                f"the Dask worker {worker} runs another environment: {', '.join(differing)}; "
                "start the workers from the project's locked environment"
            )


def connect(scheduler: str | None, workers: int | None) -> tuple[Any, Any]:
    """A client of the scheduler, or of a new local cluster of worker processes."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise BatchError(
            "dask is not installed: `uv sync` installs the project's dask group"
        ) from None
    if scheduler:
        try:
            # Waits up to distributed.comm.timeouts.connect: 30 s, or
            # DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT.
            return Client(scheduler), None
        except (OSError, TimeoutError) as error:
            raise BatchError(f"cannot reach the Dask scheduler at {scheduler}: {error}") from None
    # One thread per worker: scoring holds the GIL, so workers scale by process. A task's
    # failure is reported once, by the client, not also in the workers' logs.
    cluster = LocalCluster(
        n_workers=workers or os.cpu_count() or 1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.CRITICAL,
    )
    return Client(cluster), cluster


def refuse_filled_output(output: str) -> None:
    fs, path = fsspec.core.url_to_fs(output)
    if fs.exists(path) and not fs.isdir(path):
        raise BatchError(f"{output} is a file; the Dask engine writes a folder of parts")
    held = fs.find(path) if fs.exists(path) else []
    if held:
        raise BatchError(
            f"{output} already holds {PurePosixPath(held[0]).name}: choose a new folder or "
            "remove it, rather than mixing two runs' parts"
        )


def staging_of(output: str, run: str) -> str:
    """Hidden on disk beside OUTPUT (renamed into place); inside it on object storage."""
    fs, path = fsspec.core.url_to_fs(output)
    if storage.is_local(fs):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for leftover in storage.leftovers(path.parent, path.name):
            shutil.rmtree(leftover, ignore_errors=True)  # of a run killed outright
        staging = storage.temporary_path(path)
        (staging / "_rejects").mkdir(parents=True)
        return str(staging)
    return fs.unstrip_protocol(f"{path.rstrip('/')}/_staging-{run}")


WORKER_MODELS: dict[tuple[str, bool], tuple[Loaded, Explainer | None]] = {}


def worker_model(data: bytes, job: Job) -> tuple[Loaded, Explainer | None]:
    """The model of the bundle the client verified, loaded once in this worker process."""
    key = (job.bundle_sha256, job.explain)
    if key not in WORKER_MODELS:
        if sha256(data) != job.bundle_sha256:
            raise BatchError("the bundle a Dask worker received differs from the one verified")
        bundle = Bundle.open(data)
        model = load(bundle, job.version)
        explainer = Explainer.of(bundle, model.contract) if job.explain else None
        WORKER_MODELS.clear()  # a long-lived worker keeps one model, not every run's
        WORKER_MODELS[key] = (model, explainer)
    return WORKER_MODELS[key]


def piece_chunks(piece: Piece, rows: int, model: Loaded, scratch: Path) -> Iterator[Any]:
    fs, path = fsspec.core.url_to_fs(piece.url)
    if piece.row_groups is None:
        local = Path(path) if storage.is_local(fs) else scratch / PurePosixPath(path).name
        if not storage.is_local(fs):
            fs.get_file(path, str(local))
        try:
            yield from batch.chunks(local, rows, model.contract)
        except BatchError as error:
            raise BatchError(str(error).replace(str(local), piece.url)) from None
        return
    with fs.open(path, "rb") as handle:
        parquet = batch.parquet_file(handle, piece.url)
        yield from batch.parquet_chunks(parquet, piece.url, rows, range(*piece.row_groups))


def score_piece(piece: Piece, job: Job, data: bytes) -> dict[str, Any]:
    """A task: score one piece into its parts in the staging folder; their counts and sha256."""
    model, explainer = worker_model(data, job)
    inference = None
    if job.inference:
        url, excluded, run_id = job.inference
        log = InferenceLog(*fsspec.core.url_to_fs(url), excluded)
        # One request id per input file, so (request_id, row) names one row.
        inference = (log, f"{run_id}-{piece.file:05d}")
    fs, staging = fsspec.core.url_to_fs(job.staging)
    name = f"part-{piece.number:05d}"
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(staging if storage.is_local(fs) else scratch)
        (folder / "_rejects").mkdir(exist_ok=True)
        target, rejects = folder / f"{name}.parquet", folder / "_rejects" / f"{name}.csv"
        counts = batch.score_chunks(
            model,
            piece_chunks(piece, job.chunk_rows, model, Path(scratch)),
            piece.url,
            ChunkWriter(target),
            ChunkWriter(rejects),
            explainer,
            inference,
            first_row=piece.first_row,
        )
        part = {
            "part": target.name,
            "rejects": f"_rejects/{rejects.name}",
            "input": piece.url,
            "first_row": piece.first_row,
            **asdict(counts),
            "sha256": batch.sha256_of(target),
            "rejects_sha256": batch.sha256_of(rejects),
        }
        if not storage.is_local(fs):
            fs.put_file(str(target), f"{staging}/{part['part']}")
            fs.put_file(str(rejects), f"{staging}/{part['rejects']}")
    return part


def file_sha256(url: str) -> str:
    """A task: the sha256 of an input file, read where the workers are."""
    with fsspec.open(url, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def publish(output: str, staging: str, manifest: dict[str, Any]) -> None:
    """Make the parts visible, all at once on disk, `_SUCCESS` last on object storage."""
    fs, path = fsspec.core.url_to_fs(output)
    body = json.dumps(manifest, indent=2).encode()
    if storage.is_local(fs):
        listed = {"_SUCCESS", "_rejects"} | {
            name for part in manifest["parts"] for name in (part["part"], part["rejects"])
        }
        for written in Path(staging).rglob("*"):  # temporaries of writers that were killed
            if written.is_file() and str(written.relative_to(staging)) not in listed:
                written.unlink()
        storage.put(fs, f"{staging}/_SUCCESS", body)
        if os.path.isdir(path):
            os.rmdir(path)  # empty, as refuse_filled_output checked
        os.rename(staging, path)
        return
    staged = fsspec.core.url_to_fs(staging)[1]
    copied = []
    try:
        for part in manifest["parts"]:
            for name in (part["part"], part["rejects"]):
                fs.copy(f"{staged}/{name}", f"{path}/{name}")
                copied.append(f"{path}/{name}")
        storage.put(fs, f"{path}/_SUCCESS", body)
    except BaseException:
        if copied:
            fs.rm(copied)
        raise


def discard(staging: str) -> None:
    fs, path = fsspec.core.url_to_fs(staging)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def score(
    data: bytes,
    model: Loaded,
    source: str,
    output: str,
    chunk_rows: int,
    *,
    piece_rows: int = PIECE_ROWS,
    scheduler: str | None = None,
    workers: int | None = None,
    explain: bool = False,
    inference: tuple[InferenceLog, str] | None = None,
) -> Result:
    """Score the files `source` names into the folder `output` on a Dask cluster."""
    if chunk_rows < 1 or piece_rows < 1:
        raise BatchError("--chunk-rows and --piece-rows must be at least 1")
    if scheduler and workers is not None:
        raise BatchError("--workers sizes a local cluster; a scheduler brings its own workers")
    if workers is not None and workers < 1:
        raise BatchError("--workers must be at least 1")
    refuse_filled_output(output)
    urls = input_files(source)
    if any(os.path.abspath(output) == os.path.abspath(url) for url in urls):
        raise BatchError("the output must not overwrite an input")
    planned = pieces(urls, piece_rows)
    run = uuid.uuid4().hex
    logged = None
    if inference:
        log, run_id = inference
        logged = (log.fs.unstrip_protocol(log.root), log.excluded, run_id)
    job = Job("", sha256(data), model.version, chunk_rows, explain, logged)
    client, cluster = connect(scheduler, workers)
    staging = None
    try:
        check_workers(client)
        staging = staging_of(output, run)
        job = replace(job, staging=staging)
        bundle = client.scatter(data, broadcast=True)
        tasks = client.map(score_piece, planned, job=job, data=bundle, pure=False)
        hashes = client.map(file_sha256, urls, pure=False)
        gathered = wait_all(client, [*tasks, *hashes])
        parts, digests = gathered[: len(tasks)], gathered[len(tasks) :]
        counts = Counts(
            sum(p["rows_in"] for p in parts),
            sum(p["rows_scored"] for p in parts),
            sum(p["rows_rejected"] for p in parts),
        )
        inputs = [{"url": url, "sha256": digest} for url, digest in zip(urls, digests, strict=True)]
        result = Result(counts, inputs, parts)
        result.scheduler = client.scheduler.address
        result.workers = len(client.scheduler_info()["workers"])
        manifest = {"version": model.version, **asdict(counts), "inputs": result.inputs,
                    "parts": parts}  # fmt: skip
        publish(output, staging, manifest)
        return result
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        if staging is not None:
            discard(staging)  # on disk, a published staging folder is already OUTPUT


def wait_all(client: Any, futures: list[Any]) -> list[Any]:
    """Every task's result; on a failure, only once no task still runs (none may write into a
    staging folder that is being removed), the first failure's."""
    from distributed import KilledWorker, wait

    wait(futures)
    failed = [future for future in futures if future.status == "error"]
    if failed:
        error = failed[0].exception()
        if isinstance(error, KilledWorker):
            raise BatchError(
                f"Dask workers died each time they ran {error.task}; out of memory? Smaller "
                "pieces (--piece-rows) need less"
            ) from None
        if isinstance(error, BatchError | pa.ArrowException | OSError):
            raise BatchError(batch.first_line(error)) from None
        raise error
    return client.gather(futures)
