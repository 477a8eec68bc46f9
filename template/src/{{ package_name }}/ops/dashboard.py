"""The dashboard: one self-contained HTML page about the model for people who are not engineers,
drawn from the registry alone (its verified audit log and bundles), so it reads the same from CI's
artifact, from a file on a laptop or from the service's /dashboard.

It shows what the model is for, which version serves and who approved it when, each version's
holdout metrics beside the live metrics `monitor` measured, drift per feature, daily volumes, job
durations, the history of deploys and rollbacks, and every version's model card. Charts are inline
SVG (ops/report.py draws them): no script, nothing fetched, a few hundred kilobytes for a year of
daily monitoring.
"""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, date, datetime
from html import escape
from io import BytesIO
from typing import Any

from . import card, report
from .audit import AuditError, Record, Refused
from .bundle import BundleError
from .registry import DEFAULT_STAGE, Registry, State, fold

DAY_SECONDS = 86_400.0
# The job that writes each record, as people call it.
JOB_OF_ACTION = {
    "published": "retrain", "promoted": "deploy", "rolled_back": "rollback", "scored": "score",
    "reproduced": "reproduce", "monitored": "monitor", "collected": "gc",
}  # fmt: skip
TICKS = 5
STYLE = (
    report.STYLE
    + """
.chart { max-width: 100%; height: auto; display: block; margin: 0.5rem 0 1.5rem; }
.breach { background: #fdecea; border: 1px solid #cf222e; padding: 0.6rem 1rem; }
.ok { background: #e6f4ea; border: 1px solid #2da44e; padding: 0.6rem 1rem; }
details.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.5rem 1rem; margin: 0.5rem 0; }
"""
)


def day_number(timestamp: str) -> float:
    """Days since 1970 of an ISO time or date, the x axis of every chart over time."""
    moment = datetime.fromisoformat(timestamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() / DAY_SECONDS


def ticks(xs: list[float]) -> dict[float, str]:
    """A few dates spread along the x axis."""
    low, high = min(xs), max(xs)
    count = 1 if high == low else TICKS
    spots = [low + (high - low) * index / max(count - 1, 1) for index in range(count)]
    return {x: datetime.fromtimestamp(x * DAY_SECONDS, UTC).date().isoformat() for x in spots}


def chart_over_time(
    series: dict[str, list[tuple[float, float]]], y_label: str, **options: Any
) -> str:
    series = {label: points for label, points in series.items() if points}
    if not series:
        return ""
    xs = [x for points in series.values() for x, _ in points]
    return report.line_chart(series, y_label, ticks(xs), **options)


def read_card(registry: Registry, version: int, state: State) -> dict[str, Any] | None:
    """A version's model card from its bundle; None for bundles made before cards."""
    try:
        with zipfile.ZipFile(BytesIO(registry.bundle(version, state))) as archive:
            return json.loads(archive.read(card.CARD_MEMBER))
    except KeyError:
        return None


def monitored(records: list[Record]) -> list[Record]:
    return [record for record in records if record.action == "monitored"]


def window_end(record: Record) -> str:
    return record.details.get("window", {}).get("end") or record.timestamp


def live_series(runs: list[Record], metric: str) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for record in runs:
        for version, figures in record.details.get("versions", {}).items():
            value = (figures.get("live_metrics") or {}).get(metric)
            if value is not None:
                series.setdefault(f"version {version} live", []).append(
                    (day_number(window_end(record)), float(value))
                )
    return series


def metrics_section(state: State, runs: list[Record], task_metrics: dict[str, Any]) -> str:
    """One chart per metric: each version's holdout figure when published, and live figures."""
    parts = []
    for name, entry in task_metrics.items():
        holdout = [
            (day_number(published["manifest"]["created_at"]), float(value))
            for published in state.versions.values()
            if (value := published["manifest"]["metrics"].get(name)) is not None
        ]
        series = {"holdout, when published": holdout, **live_series(runs, name)}
        direction = "higher is better" if entry["higher_is_better"] else "lower is better"
        chart = chart_over_time(series, name)
        if chart:
            parts.append(f"<h3>{escape(entry['label'])}</h3><p>{direction}.</p>{chart}")
    return "".join(parts)


def serving_history(records: list[Record], stage: str) -> list[tuple[float, float]]:
    served: list[int] = []
    points = []
    for record in records:
        details = record.details
        if details.get("stage") != stage:
            continue
        if record.action == "promoted":
            served.append(details["version"])
        elif record.action == "rolled_back":
            served.pop()
        else:
            continue
        points.append((day_number(record.timestamp), float(served[-1])))
    return points


def daily_volumes(runs: list[Record]) -> list[tuple[float, float, float]]:
    """Rows and errors per day over every version. Windows overlap and cut days in two, and the
    log only grows, so a day's largest count is the most complete."""
    days: dict[str, dict[str, tuple[int, int]]] = {}
    for record in runs:
        for version, figures in record.details.get("versions", {}).items():
            for day in figures.get("daily", []):
                counted = days.setdefault(day["day"], {})
                counted[version] = max(counted.get(version, (0, 0)), (day["rows"], day["errors"]))
    return [
        (
            day_number(day),
            float(sum(rows for rows, _ in counts.values())),
            float(sum(errors for _, errors in counts.values())),
        )
        for day, counts in sorted(days.items())
    ]


def durations(records: list[Record]) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        seconds = record.details.get("duration_seconds")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool):
            series.setdefault(JOB_OF_ACTION.get(record.action, record.action), []).append(
                (day_number(record.timestamp), float(seconds))
            )
    return series


def approvals(records: list[Record], version: int) -> list[str]:
    return [
        f"{record.actor} approved it for {record.details['stage']} on "
        f"{record.timestamp[:16].replace('T', ' ')} UTC"
        + (f" ({record.details['reason']})" if record.details.get("reason") else "")
        for record in records
        if record.action == "promoted" and record.details["version"] == version
    ]


def headline(records: list[Record], state: State) -> str:
    if not state.history:
        return "<p>No version serves yet: deploy one with <code>nox -s deploy</code>.</p>"
    lines = []
    for stage, served in state.history.items():
        if not served:
            lines.append(f"<p>Nothing serves in {escape(stage)}.</p>")
            continue
        version = served[-1]
        last = next(
            record for record in reversed(records)
            if record.details.get("stage") == stage
            and record.action in ("promoted", "rolled_back")
        )  # fmt: skip
        how = "rolled back to it" if last.action == "rolled_back" else "approved it"
        lines.append(
            f'<p class="ok">Version <b class="serving">{version}</b> serves in '
            f'<b>{escape(stage)}</b>: <b class="approver">{escape(last.actor)}</b> {how} on '
            f"{escape(last.timestamp[:16].replace('T', ' '))} UTC.</p>"
        )
    return "".join(lines)


def history_list(records: list[Record]) -> str:
    items = []
    for record in records:
        details = record.details
        when = escape(record.timestamp[:16].replace("T", " "))
        if record.action == "promoted":
            text = (
                f"version {details['version']} deployed to {details['stage']} by {record.actor}"
                + (
                    f", replacing version {details['from_version']}"
                    if details["from_version"]
                    else ""
                )
            )
        elif record.action == "rolled_back":
            text = (
                f"{details['stage']} rolled back from version {details['from_version']} to "
                f"{details['to_version']} by {record.actor}: {details['reason']}"
            )
        elif record.action == "published":
            verdict = "passed" if details["gate"]["passed"] else "failed"
            text = f"version {details['version']} published; it {verdict} the gate"
        else:
            continue
        items.append(f"<li>{when} UTC: {escape(text)}</li>")
    return f"<ul>{''.join(reversed(items))}</ul>"


def monitoring_section(runs: list[Record], serving: int | None) -> str:
    if not runs:
        return (
            "<h2>Live behaviour</h2><p>Not monitored yet: <code>nox -s monitor</code> measures "
            "drift, volumes and live performance from the inference log.</p>"
        )
    latest = runs[-1].details
    window = latest.get("window", {})
    breaches = latest.get("breaches", [])
    if breaches:
        verdict = (
            '<div class="breach"><b>The last check found problems:</b><ul>'
            + "".join(
                f"<li>{escape(str(breach.get('kind')))} on {escape(str(breach.get('subject')))}: "
                f"{escape(report.number(float(breach.get('value') or 0)))} (limit "
                f"{escape(report.number(float(breach.get('threshold') or 0)))}). "
                f"{escape(str(breach.get('advice', '')))}</li>"
                for breach in breaches
            )
            + "</ul></div>"
        )
    else:
        verdict = '<p class="ok">The last check found nothing out of bounds.</p>'
    figures = latest.get("versions", {}).get(str(serving)) if serving else None
    figures = figures or next(iter(latest.get("versions", {}).values()), {})
    # A feature with no rows in the window (or left out of the log) has no figure.
    measured = (figures.get("drift") or {}).items()
    drift = {name: value for name, value in measured if value is not None}
    limits = latest.get("thresholds", {})
    limit = limits.get("drift_psi")
    rows, enough = figures.get("rows", 0), limits.get("min_rows", 0)
    drift_chart = (
        report.bar_chart(
            sorted(drift.items(), key=lambda item: (-item[1], item[0])),
            "population stability index (0 = same as in training)",
            limit,
        )
        if drift
        else "<p>No drift figures in the last check.</p>"
    )
    if drift and rows < enough:
        drift_chart = (
            f"<p>Only {rows:,} records so far, fewer than the {enough:,} monitoring waits for "
            "before it judges drift: read these bars as a first sign, not a verdict.</p>"
            + drift_chart
        )
    above = f"above {report.number(limit)}" if limit is not None else "well above 0.1"
    volumes = daily_volumes(runs)
    volume_chart = (
        report.column_chart(volumes, "records per day", ticks([x for x, _, _ in volumes]))
        if volumes
        else ""
    )
    error_series: dict[str, list[tuple[float, float]]] = {}
    latency: dict[str, list[tuple[float, float]]] = {}
    for record in runs:
        x = day_number(window_end(record))
        for version, v in record.details.get("versions", {}).items():
            if v.get("error_rate") is not None:
                error_series.setdefault(f"version {version}", []).append(
                    (x, float(v["error_rate"]))
                )
            if v.get("latency_ms"):
                latency.setdefault(f"version {version} p99", []).append(
                    (x, float(v["latency_ms"]["p99"]))
                )
    return f"""<h2>Live behaviour</h2>
<p>From the last check, over {escape(str(window.get("start", "?"))[:10])} to
{escape(str(window.get("end", "?"))[:10])}.</p>{verdict}
<h3>Has the input changed since training?</h3>
<p>Each bar compares what the model receives now with what it learnt from, for one input. Below
0.1 little has changed; {above} the model sees data unlike its training data, and its answers
deserve a check (a red bar is over the limit).</p>{drift_chart}
<h3>How much it is used</h3><p>Records scored per day, with those refused in red.</p>{volume_chart}
<h3>Refused requests</h3><p>Share of requests refused, at each check.</p>
{chart_over_time(error_series, "share refused")}
<h3>Response time</h3><p>99 of 100 answers came within this many milliseconds.</p>
{chart_over_time(latency, "milliseconds (p99)")}"""


def version_cards(registry: Registry, records: list[Record], state: State) -> str:
    """Every version's card, newest first; the serving version's is open."""
    serving = state.serving(DEFAULT_STAGE)
    parts = []
    for version in sorted(state.versions, reverse=True):
        published = state.versions[version]
        gate = published["gate"]
        verdict = "passed" if gate["passed"] else "failed"
        notes = "; ".join(gate.get("reasons", [])) or gate.get("note", "")
        try:
            described = read_card(registry, version, state)
        except (AuditError, BundleError, Refused, zipfile.BadZipFile, ValueError) as error:
            described, body = None, f"<p>Its bundle cannot be read: {escape(str(error))}</p>"
        else:
            body = (
                card.section(described, approvals(records, version))
                if described
                else "<p>This version was packaged before model cards existed.</p>"
            )
        summary = (
            f"Version {version}, published {published['manifest']['created_at'][:10]}: "
            f"{verdict} the gate"
        )
        gate_note = f"<p>The gate: {escape(notes)}</p>" if notes else ""
        parts.append(
            f'<details class="card"{" open" if version == serving else ""}><summary>'
            f"{escape(summary)}</summary>{gate_note}{body}</details>"
        )
    return "".join(parts)


def build(registry: Registry, records: list[Record] | None = None) -> str:
    """The page, from the registry's verified records (read now unless given)."""
    records = registry.records() if records is None else records
    state = fold(records)
    name = registry.root.rsplit("/", 1)[-1]
    if not state.versions:
        return page(name, "<p>Nothing published yet: run <code>nox -s retrain</code>.</p>")
    serving = state.serving(DEFAULT_STAGE)
    shown = serving or max(state.versions)
    described = read_card(registry, shown, state)
    runs = monitored(records)
    if described:
        purpose = described["purpose"]
        about = (
            f"<p>{escape(purpose['description'])}</p><p>It predicts "
            f"<b>{escape(purpose['target'])}</b> ({escape(purpose['task'])}).</p>"
        )
        task_metrics = described["metrics"]
    else:
        about = "<p>The serving version predates model cards, so its purpose is not recorded.</p>"
        task_metrics = {
            key: {"label": key, "higher_is_better": True}
            for key in state.versions[shown]["manifest"]["metrics"]
            if key != "holdout_rows"
        }
    stages = [
        chart_over_time({stage: serving_history(records, stage)}, "version serving", steps=True)
        for stage in state.history
    ]
    jobs = chart_over_time(durations(records), "seconds")
    body = f"""<h2>What it is for</h2>{about}
<h2>What serves now</h2>{headline(records, state)}
<h3>Which version served when</h3>
<p>The line steps up at each deploy and down at each rollback.</p>{"".join(stages)}
<h2>How good it is</h2>
<p>Each version's score on held-out rows when it was published, and, where actual outcomes came
back, its score on live traffic at each check.</p>{metrics_section(state, runs, task_metrics)}
{monitoring_section(runs, serving)}
<h2>How long jobs take</h2><p>Seconds each lifecycle job ran, by job; a job that suddenly takes much
longer is worth a look before it stops fitting its schedule.</p>
{jobs or "<p>No job recorded its duration yet.</p>"}
<h2>Deploys and rollbacks</h2>{history_list(records)}
<h2>Model cards</h2><p>What each version learnt from, what it relies on, and its limits.</p>
{version_cards(registry, records, state)}"""
    return page(name, body, f"head: record {records[-1].sequence}")


def page(name: str, body: str, footer: str = "") -> str:
    made = date.today().isoformat()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{escape(name)}: model dashboard</title><style>{STYLE}</style></head><body>
<h1>{escape(name)}</h1>{body}
<p><small>Drawn {made} from the verified audit log ({escape(footer)}).</small></p>
</body></html>
"""
