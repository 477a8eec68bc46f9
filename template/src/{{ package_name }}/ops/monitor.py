"""Monitoring: how the versions a stage served did over a window, judged against params.yaml.

For the version serving now and the one it replaced: volumes per day, refused requests, latency,
input drift per feature and prediction drift against the version's own `reference.json`, and
live performance with the task's metrics where ground truth came back. The jobs of the audit
log (every lifecycle command, every pipeline stage) are compared with their recent median.
Each verdict becomes a `monitored` record, so the log keeps what was seen and when.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from .. import contract as contracts
from .. import tasks
from . import drift, inference
from .audit import Record, Refused
from .bundle import SCHEMA_MEMBER, Bundle
from .registry import Registry, State, fold

RECENT_RUNS = 10  # a job's last duration is compared with the median of this many runs before
EARLIER_RUNS_NEEDED = 3
# The command that writes each kind of record: the job a duration belongs to.
COMMAND_OF_ACTION = {"published": "retrain", "promoted": "deploy", "rolled_back": "rollback",
                     "scored": "score", "reproduced": "reproduce", "monitored": "monitor",
                     "collected": "gc"}  # fmt: skip
# The inference log's columns that every version's figures read (interface 1).
LOG_COLUMNS = {"request_id": "string", "row": "int32", "time": "datetime64[us, UTC]",
               "status": "int16", "latency_ms": "float32", "prediction": "object"}  # fmt: skip
THRESHOLDS = (
    "window_days", "min_rows", "drift_psi", "prediction_psi", "max_metric_drop",
    "max_error_rate", "max_p99_latency_ms", "duration_factor",
)  # fmt: skip


def thresholds_from(params: dict[str, Any]) -> dict[str, Any]:
    section = params.get("monitor")
    missing = [name for name in THRESHOLDS if name not in (section or {})]
    if missing:
        raise Refused(
            f"params.yaml lacks monitor.{', monitor.'.join(missing)}: add the `monitor:` section "
            "the README shows (a project made before monitoring has none)"
        )
    for name in THRESHOLDS:
        value = section[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (math.isfinite(value) and value >= 0)
        ):
            raise Refused(
                f"params.yaml: monitor.{name} must be a number of 0 or more, not {value!r}"
            )
    return section


def window(end: str | None, days: float) -> tuple[datetime, datetime]:
    """[end - days, end): `end` an ISO date or time (UTC unless it says), default now."""
    if not (math.isfinite(days) and days > 0):
        raise Refused(f"--days must be a number above 0, not {days}")
    try:
        until = contracts.parse_instant(end) if end else datetime.now(UTC)
    except ValueError:
        raise Refused(f"--end {end!r} is not an ISO 8601 date or time") from None
    try:
        return until - timedelta(days=days), until
    except OverflowError:
        raise Refused(f"--days {days:g} before --end reaches before the year 1") from None


def percentile(values: pd.Series, share: float) -> float:
    return round(float(np.percentile(values.to_numpy(dtype="float64"), share)), 3)


def labelled(rows: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """The scored rows that ground truth came back for, with their `actual` (the latest one
    received for a row): matched by request id and row, or by a pass-through key column."""
    if feedback.empty or rows.empty:
        return rows.iloc[0:0].assign(actual=pd.Series(dtype="object"))
    feedback = feedback.sort_values("received_at")
    by_id = feedback[feedback["request_id"].notna()].drop_duplicates(
        ["request_id", "row"], keep="last"
    )
    joined = [rows.merge(by_id[["request_id", "row", "actual"]], on=["request_id", "row"])]
    keyed = feedback[feedback["request_id"].isna() & feedback["key"].notna()]
    for key_column, group in keyed.groupby("key_column"):
        column = f"{drift.INPUT}{key_column}"
        if column in rows:
            keys = group.drop_duplicates("key", keep="last")[["key", "actual"]]
            with_key = rows.assign(key=rows[column].astype("string"))
            joined.append(with_key.merge(keys, on="key").drop(columns="key"))
    return pd.concat(joined, ignore_index=True).drop_duplicates(["request_id", "row"], keep="last")


def live_metrics(rows: pd.DataFrame, contract: contracts.Contract, classes: list[Any]) -> dict:
    """The task's metrics (tasks.METRICS) on the labelled rows; a metric that cannot be computed
    on them (ROC AUC with one class seen) is left out."""
    target = contract.target
    if target.task.is_classification:
        names = [str(label) for label in classes]
        positive = None if target.positive is None else str(target.positive)
        target = dataclasses.replace(target, positive=positive)
        probabilities = rows[[f"probability.{name}" for name in names]].to_numpy(dtype="float64")
        predicted = rows["prediction"].astype(str).to_numpy(dtype=object)
        actual = rows["actual"].astype(str).to_numpy(dtype=object)
        answers = tasks.Predictions(predicted, probabilities, tuple(names))
    else:
        answers = tasks.Predictions(rows["prediction"].to_numpy(dtype="float64"), None, ())
        actual = rows["actual"].to_numpy(dtype="float64")
    figures = {}
    for name, metric in tasks.METRICS[target.task].items():
        try:
            figures[name] = round(float(metric.compute(actual, answers, target)), tasks.DECIMALS)
        except ValueError:
            continue
    return figures


def version_figures(
    rows: pd.DataFrame, feedback: pd.DataFrame, bundle: Bundle
) -> tuple[dict[str, Any], int]:
    """A version's figures over the window (interface 3's `versions` entry) and its scored rows."""
    if rows.empty:  # no log at all has no columns either
        rows = pd.DataFrame({name: pd.Series(dtype=kind) for name, kind in LOG_COLUMNS.items()})
    scored = rows[rows["status"] == 200]
    requests = rows["request_id"].nunique()
    errors = rows.loc[rows["status"] != 200, "request_id"].nunique()
    per_request = rows.dropna(subset=["latency_ms"]).groupby("request_id")["latency_ms"].max()
    daily = (
        rows.assign(day=rows["time"].dt.strftime("%Y-%m-%d"), ok=rows["status"] == 200)
        .groupby("day")
        .agg(rows=("ok", "sum"), errors=("ok", lambda ok: int((~ok).sum())))
    )
    contract = contracts.from_json(json.loads(bundle.members[SCHEMA_MEMBER]))
    reference = bundle.reference()
    profile = (
        drift.LiveProfile(reference, contract).add(scored).psi() if reference is not None else None
    )
    truth = labelled(scored, feedback)
    classes = bundle.manifest.get("classes", [])
    figures = {
        "requests": int(requests),
        "rows": len(scored),
        "errors": int(errors),
        "error_rate": round(errors / requests, 6) if requests else 0.0,
        "latency_ms": None
        if per_request.empty
        else {"p50": percentile(per_request, 50), "p99": percentile(per_request, 99)},
        "drift": profile["drift"] if profile else {},
        "prediction_drift": profile["prediction_drift"] if profile else None,
        "live_metrics": live_metrics(truth, contract, classes) if len(truth) else {},
        "labelled_rows": len(truth),
        "daily": [
            {"day": day, "rows": int(row["rows"]), "errors": int(row["errors"])}
            for day, row in daily.iterrows()
        ],
        "reference": reference is not None,
    }
    return figures, len(scored)


def job_durations(records: list[Record]) -> dict[str, list[float]]:
    """Every recorded duration, oldest first: per command, and per pipeline stage."""
    jobs: dict[str, list[float]] = {}
    for record in records:
        details = record.details if isinstance(record.details, dict) else {}
        if "duration_seconds" in details:
            job = COMMAND_OF_ACTION.get(record.action, record.action)
            jobs.setdefault(job, []).append(details["duration_seconds"])
        for stage, seconds in (details.get("stage_seconds") or {}).items():
            jobs.setdefault(f"stage {stage}", []).append(seconds)
    return jobs


def breach(kind: str, version: int | None, subject: str, value: float, threshold: float,
           advice: str) -> dict[str, Any]:  # fmt: skip
    return {"kind": kind, "version": version, "subject": subject, "value": value,
            "threshold": threshold, "advice": advice}  # fmt: skip


RETRAIN = "retrain on recent data: `nox -s retrain`, then review and `nox -s deploy`"


def judge(
    figures: dict[int, dict[str, Any]],
    rows: dict[int, int],
    production: int,
    previous: int | None,
    state: State,
    jobs: dict[str, list[float]],
    limits: dict[str, Any],
    gate: dict[str, Any],
    task: contracts.Task,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The breaches of the serving version (and of slow jobs), and the jobs' figures."""
    found = []
    now = figures[production]
    metric = gate["metric"]
    higher = tasks.METRICS[task][metric].higher_is_better
    if rows[production] >= limits["min_rows"]:
        for feature, value in now["drift"].items():
            if value is not None and value > limits["drift_psi"]:
                found.append(breach("input_drift", production, feature, value,
                                    limits["drift_psi"], RETRAIN))  # fmt: skip
        value = now["prediction_drift"]
        if value is not None and value > limits["prediction_psi"]:
            found.append(breach("prediction_drift", production, "prediction", value,
                                limits["prediction_psi"], RETRAIN))  # fmt: skip
    live = now["live_metrics"].get(metric)
    holdout = state.versions[production]["manifest"]["metrics"].get(metric)
    if live is not None and holdout is not None and now["labelled_rows"] >= limits["min_rows"]:
        drop = (holdout - live) if higher else (live - holdout)
        if drop > limits["max_metric_drop"]:
            before = figures.get(previous, {}).get("live_metrics", {}).get(metric)
            better = before is not None and (before > live if higher else before < live)
            advice = (
                f"roll back to version {previous}, which did better live ({metric} {before}): "
                "`nox -s rollback -- --approved-by NAME --reason TEXT`"
                if better
                else RETRAIN
            )
            found.append(breach("performance", production, metric, round(drop, 6),
                                limits["max_metric_drop"], advice))  # fmt: skip
    if now["requests"] and now["error_rate"] > limits["max_error_rate"]:
        found.append(breach(
            "errors", production, "error_rate", now["error_rate"], limits["max_error_rate"],
            "clients send what the contract refuses, or the service fails: read the refused "
            "requests in the inference log and the service's output",
        ))  # fmt: skip
    latency = now["latency_ms"]
    if latency and latency["p99"] > limits["max_p99_latency_ms"]:
        found.append(breach(
            "latency", production, "p99", latency["p99"], limits["max_p99_latency_ms"],
            "add workers or replicas (`--workers`), or look for slow requests",
        ))  # fmt: skip
    figures_of_jobs = {}
    for job, seconds in jobs.items():
        earlier = seconds[-1 - RECENT_RUNS : -1]
        median = statistics.median(earlier) if earlier else None
        figures_of_jobs[job] = {"last_seconds": seconds[-1], "median_seconds": median}
        limit = None if median is None else limits["duration_factor"] * median
        if len(earlier) >= EARLIER_RUNS_NEEDED and seconds[-1] > limit:
            found.append(breach(
                "job_duration", None, job, seconds[-1], round(limit, 3),
                f"{job} took {seconds[-1]:.0f} s against a median of {median:.0f} s: look for "
                "grown data or a slower machine before it outgrows its schedule",
            ))  # fmt: skip
    return found, figures_of_jobs


def monitor(
    registry: Registry,
    params: dict[str, Any],
    stage: str,
    start: datetime,
    end: datetime,
    task: contracts.Task,
) -> dict[str, Any]:
    """The `monitored` record's details (without its duration) for a stage over [start, end)."""
    limits = thresholds_from(params)
    records = registry.records()
    state = fold(records)
    served = state.history.get(stage, [])
    if not served:
        raise Refused(f"no version serves in {stage}: nothing to monitor")
    production, previous = served[-1], (served[-2] if len(served) > 1 else None)
    log = inference.read(registry.fs, registry.root, start, end)
    feedback = inference.read_feedback(registry.fs, registry.root)
    figures, rows = {}, {}
    for version in (production, previous):
        if version is None:
            continue
        bundle = Bundle.open(registry.bundle(version, state))
        mine = log[log["version"] == version] if not log.empty else log
        figures[version], rows[version] = version_figures(mine, feedback, bundle)
    found, jobs = judge(figures, rows, production, previous, state, job_durations(records),
                        limits, params["gate"], task)  # fmt: skip
    return {
        "stage": stage,
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "versions": {str(version): figure for version, figure in figures.items()},
        "jobs": jobs,
        "breaches": found,
        "thresholds": {name: limits[name] for name in THRESHOLDS},
    }


def breach_lines(details: dict[str, Any]) -> list[str]:
    """What broke and what to do, one line each: printed, and what a notification carries."""
    return [
        f"{item['kind']}: {item['subject']}"
        + (f" of version {item['version']}" if item["version"] is not None else "")
        + (" fell by " if item["kind"] == "performance" else " is ")
        + f"{item['value']} (threshold {item['threshold']}); {item['advice']}"
        for item in details["breaches"]
    ]


def summary_lines(details: dict[str, Any], min_rows: int) -> list[str]:
    """The figures of each version, for people reading the command's output."""
    lines = [f"window {details['window']['start'][:19]} to {details['window']['end'][:19]} UTC"]
    for version, figures in details["versions"].items():
        latency = figures["latency_ms"]
        drifted = {name: value for name, value in figures["drift"].items() if value is not None}
        worst = max(drifted.items(), key=lambda item: item[1], default=None)
        parts = [
            f"version {version}: {figures['requests']} requests, {figures['rows']} rows, "
            f"{figures['errors']} refused ({format(figures['error_rate'], '.1%')})"
        ]
        if latency:
            parts.append(f"latency p50 {latency['p50']} ms p99 {latency['p99']} ms")
        if worst:
            parts.append(f"largest input drift {worst[0]} PSI {worst[1]}")
        if figures["prediction_drift"] is not None:
            parts.append(f"prediction drift PSI {figures['prediction_drift']}")
        if figures["live_metrics"]:
            parts.append(
                f"live {figures['live_metrics']} on {figures['labelled_rows']} labelled rows"
            )
        lines.append(", ".join(parts))
        if not figures["reference"]:
            lines.append(f"  version {version}'s bundle predates reference.json: no drift for it")
        elif figures["rows"] < min_rows:
            lines.append(f"  fewer than {min_rows} rows (monitor.min_rows): drift not judged")
    return lines
