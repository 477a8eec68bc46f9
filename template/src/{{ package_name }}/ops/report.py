"""The candidate report: the gate's verdict and the evidence, for people who are not engineers.

Writes `candidate.md` and a self-contained `candidate.html` (inline SVG, no scripts, nothing
fetched) with the task's metrics side by side and the picture that fits the task: ROC curves and
outcome counts for binary, the confusion matrix for multiclass, predicted against actual values
for regression.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from ..contract import Task
from ..tasks import METRICS
from .gate import Evaluation, GateResult

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }
.verdict { padding: 1rem; border-radius: 6px; font-size: 1.2rem; }
.pass { background: #e6f4ea; border: 1px solid #2da44e; }
.fail { background: #fdecea; border: 1px solid #cf222e; }
table { border-collapse: collapse; margin: 1rem 0; }
td, th { border: 1px solid #ddd; padding: 0.4rem 0.8rem; text-align: left; }
.side { display: flex; gap: 2rem; flex-wrap: wrap; align-items: flex-start; }
"""
OUTCOMES = {  # binary: (actual is positive, predicted positive) -> what it means
    (True, True): "Real cases flagged",
    (True, False): "Real cases missed",
    (False, True): "False alarms",
    (False, False): "Correctly cleared",
}


def verdict(result: GateResult, version: int) -> str:
    if result.passed:
        return f"Version {version} passed the deploy gate and can be deployed with approval."
    return (
        f"Version {version} failed the deploy gate and cannot be deployed: "
        + "; ".join(result.reasons)
        + "."
    )


def serving_sentence(manifest: dict[str, Any]) -> str:
    """What will answer requests once this version is deployed, in plain words."""
    serving = manifest["serving_model"]
    if "reason" in serving:
        return (
            f"Requests will be answered by the trained model itself ({serving['runtime']}), "
            f"not a faster compiled copy: {serving['reason']}."
        )
    return (
        f"Requests will be answered by a compiled copy of the trained model "
        f"({serving['runtime']}). It gave the trained model's answers on all "
        f"{serving['parity']['rows']:,} rows it was checked on: the holdout, and rows spread "
        "over every value the input contract allows."
    )


def metric_rows(result: GateResult) -> list[tuple[str, str, str, str]]:
    rows = []
    for key, metric in METRICS[result.task].items():
        candidate = result.candidate.scores[key]
        if result.production is None:
            rows.append((metric.label, f"{candidate:.4f}", "none yet", ""))
            continue
        production = result.production.scores[key]
        rows.append(
            (
                metric.label,
                f"{candidate:.4f}",
                f"{production:.4f}",
                f"{candidate - production:+.4f}",
            )
        )
    return rows


def outcome_rows(result: GateResult, positive: str) -> list[tuple[str, str, str]]:
    """Binary: how many holdout cases fell in each outcome, for the candidate and production."""

    def count(evaluation: Evaluation | None, real: bool, flagged: bool) -> str:
        if evaluation is None:
            return ""
        return str(
            sum(
                number
                for actual, said in evaluation.confusion.items()
                for predicted, number in said.items()
                if (actual == positive) == real and (predicted == positive) == flagged
            )
        )

    return [
        (label, count(result.candidate, *key), count(result.production, *key))
        for key, label in OUTCOMES.items()
    ]


def confusion_rows(evaluation: Evaluation) -> list[list[str]]:
    """Multiclass: a row per actual class, a column per predicted class."""
    classes = list(evaluation.confusion)
    return [
        [f"actually {actual}", *(str(evaluation.confusion[actual][said]) for said in classes)]
        for actual in classes
    ]


def gate_sentence(result: GateResult) -> str:
    bound = "at least" if result.higher_is_better else "at most"
    return (
        f"The gate asks for {result.metric} of {bound} {result.limit:.4f}, and at most "
        f"{result.max_regression:.4f} worse than the production model. {result.note}"
    ).rstrip()


def markdown(result: GateResult, version: int, manifest: dict[str, Any]) -> str:
    production = f"version {result.production_version}" if result.production_version else "none yet"
    lines = [
        f"# Candidate model: version {version}",
        "",
        f"**{verdict(result, version)}**",
        "",
        f"Compared on the same {result.candidate.rows} holdout rows with the production model "
        f"({production}). {gate_sentence(result)}",
        "",
        "| metric | candidate | production | change |",
        "|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in metric_rows(result)),
        "",
    ]
    if result.task is Task.BINARY:
        lines += ["| outcome on the holdout | candidate | production |", "|---|---|---|"]
        positive = str(manifest_positive(manifest))
        lines += [f"| {' | '.join(row)} |" for row in outcome_rows(result, positive)]
    elif result.task is Task.MULTICLASS:
        classes = list(result.candidate.confusion)
        lines += [
            "Candidate's answers on the holdout (rows: the actual class):",
            "",
            f"| | {' | '.join(f'said {name}' for name in classes)} |",
            f"|---|{'---|' * len(classes)}",
            *(f"| {' | '.join(row)} |" for row in confusion_rows(result.candidate)),
        ]
    lines += [
        "",
        f"Built from commit `{manifest['git_commit'][:12]}` on data "
        + ", ".join(f"`{path}` ({md5[:8]})" for path, md5 in manifest["data_hashes"].items())
        + f", created {manifest['created_at']}. {quality_sentence(manifest)}",
        "",
        serving_sentence(manifest),
        "",
    ]
    return "\n".join(lines)


def manifest_positive(manifest: dict[str, Any]) -> Any:
    """The positive class, from the contract recorded in the bundle's manifest."""
    return manifest.get("positive_class")


def quality_sentence(manifest: dict[str, Any]) -> str:
    quality = manifest.get("data_quality") or {}
    if not quality:
        return ""
    return (
        f"Of {quality['rows_read']:,} raw rows, {quality['rows_rejected']:,} broke the input "
        "contract and were set aside."
    )


def plot_svg(
    series: dict[str, tuple[list[tuple[float, float]], str]], x_label: str, y_label: str,
    *, joined: bool,
) -> str:  # fmt: skip
    """Curves (joined) or points on a 300x300 plot, both axes over the same range, with the
    diagonal where x equals y: chance for ROC curves, a perfect answer for predicted values."""
    size, pad = 300, 40
    values = [v for points, _ in series.values() for point in points for v in point] or [0, 1]
    low, high = (0.0, 1.0) if joined else (min(values), max(values))
    span = (high - low) or 1.0

    def at(x: float, y: float) -> str:
        return f"{pad + (x - low) / span * size:.1f},{pad + (1 - (y - low) / span) * size:.1f}"

    marks = []
    for label, (points, colour) in series.items():
        if joined:
            marks.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="3" '
                f'points="{" ".join(at(x, y) for x, y in points)}">'
                f"<title>{escape(label)}</title></polyline>"
            )
        else:
            marks += [
                f'<circle cx="{at(x, y).split(",")[0]}" cy="{at(x, y).split(",")[1]}" r="2.5" '
                f'fill="{colour}" fill-opacity="0.6"/>'
                for x, y in points
            ]
    legend = "".join(
        f'<text x="{pad + 150}" y="{pad + 230 + 18 * i}" fill="{colour}">{escape(label)}</text>'
        for i, (label, (_, colour)) in enumerate(series.items())
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 2 * pad}" '
        f'height="{size + 2 * pad}" role="img" aria-label="{escape(y_label)}">'
        f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" stroke="#999"/>'
        f'<line x1="{pad}" y1="{pad + size}" x2="{pad + size}" y2="{pad}" stroke="#ccc" '
        'stroke-dasharray="4"/>'
        f"{''.join(marks)}{legend}"
        f'<text x="{pad + size / 2}" y="{size + 2 * pad - 8}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text x="12" y="{pad + size / 2}" transform="rotate(-90 12 {pad + size / 2})" '
        f'text-anchor="middle">{escape(y_label)}</text></svg>'
    )


def table(header: list[str], rows: list) -> str:
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def picture(result: GateResult, version: int, manifest: dict[str, Any]) -> str:
    """The task's evidence: tables beside a plot."""
    # Production first, so the candidate is drawn on top where the two coincide.
    evaluations = {}
    if result.production:
        evaluations[f"production (version {result.production_version})"] = (
            result.production, "#999"
        )  # fmt: skip
    evaluations[f"candidate (version {version})"] = (result.candidate, "#1f6feb")
    if result.task is Task.BINARY:
        rows = outcome_rows(result, str(manifest_positive(manifest)))
        curves = {label: (e.roc, colour) for label, (e, colour) in evaluations.items()}
        return (
            "<h2>Outcomes on the holdout</h2>"
            + table(["", "candidate", "production"], rows)
            + "</div><div><h2>ROC curves</h2>"
            + plot_svg(curves, "false alarm rate", "share of real cases caught", joined=True)
        )
    if result.task is Task.MULTICLASS:
        classes = list(result.candidate.confusion)
        return "<h2>The candidate's answers on the holdout</h2>" + table(
            ["", *(f"said {name}" for name in classes)], confusion_rows(result.candidate)
        )
    points = {label: (e.points, colour) for label, (e, colour) in evaluations.items()}
    return "</div><div><h2>Predicted against actual values</h2>" + plot_svg(
        points, "actual value", "predicted value", joined=False
    )


def html(result: GateResult, version: int, manifest: dict[str, Any]) -> str:
    status = "pass" if result.passed else "fail"
    metric_table = table(["metric", "candidate", "production", "change"], metric_rows(result))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Candidate model: version {version}</title>
<style>{STYLE}</style></head><body>
<h1>Candidate model: version {version}</h1>
<p class="verdict {status}">{escape(verdict(result, version))}</p>
<p>Both models were scored on the same {result.candidate.rows} holdout rows.
{escape(gate_sentence(result))}</p>
<div class="side">
<div><h2>Key metrics</h2>{metric_table}
{picture(result, version, manifest)}</div>
</div>
<p>Built from commit <code>{escape(manifest["git_commit"][:12])}</code>, created
{escape(manifest["created_at"])}. {escape(quality_sentence(manifest))}</p>
<p>{escape(serving_sentence(manifest))}</p>
</body></html>
"""


def write(result: GateResult, version: int, manifest: dict[str, Any], reports_dir: Path) -> Path:
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / "candidate.md").write_text(markdown(result, version, manifest))
    page = reports_dir / "candidate.html"
    page.write_text(html(result, version, manifest))
    return page


# Charts of the dashboard and the model card, drawn here beside the candidate report's, so every
# picture of the project has one home and one look.
PALETTE = ("#1f6feb", "#cf222e", "#2da44e", "#bf8700", "#8250df", "#0a7f86", "#999999")
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 720, 220, 48
LEGEND_WIDTH = 170  # right of the plot: a line per series


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def chart_frame(label: str, body: str, height: int = CHART_HEIGHT) -> str:
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_WIDTH} '
        f'{height}" width="{CHART_WIDTH}" height="{height}" role="img" '
        f'aria-label="{escape(label)}">{body}</svg>'
    )


def number(value: float) -> str:
    """A tick label: short, whatever the scale."""
    return f"{value:.3g}" if abs(value) < 1e3 else f"{value:,.0f}"


def line_chart(
    series: dict[str, list[tuple[float, float]]], y_label: str, x_ticks: dict[float, str],
    *, steps: bool = False,
) -> str:  # fmt: skip
    """Lines over time (x: any increasing number, e.g. days), a dot at each value and a legend;
    `steps` holds each value until the next one (which version served when)."""
    width, height, pad = CHART_WIDTH, CHART_HEIGHT, CHART_PAD
    points = [point for values in series.values() for point in values]
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(ys), max(ys)
    if y_high == y_low:
        y_low, y_high = y_low - 0.5, y_high + 0.5
    x_span = (x_high - x_low) or 1.0
    plot_width, plot_height = width - 2 * pad - LEGEND_WIDTH, height - 2 * pad

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            pad + (x - x_low) / x_span * plot_width,
            pad + (1 - (y - y_low) / (y_high - y_low)) * plot_height,
        )

    marks = []
    for index, (label, values) in enumerate(series.items()):
        where = [at(x, y) for x, y in sorted(values)]
        if steps:
            held = [where[0]]
            for x, y in where[1:]:
                held += [(x, held[-1][1]), (x, y)]
            where = [*held, (pad + plot_width, held[-1][1])]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in where)
        marks.append(
            f'<polyline class="mark" fill="none" stroke="{colour(index)}" stroke-width="2" '
            f'points="{path}"><title>{escape(label)}</title></polyline>'
        )
        if len(values) <= 60 and not steps:  # dots where they can be told apart
            marks += [
                f'<circle class="mark" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour(index)}">'
                f"<title>{escape(label)}: {number(value)}</title></circle>"
                for (x, y), (_, value) in zip(where, sorted(values), strict=True)
            ]
        marks.append(
            f'<text x="{width - LEGEND_WIDTH}" y="{pad + 16 * index}" font-size="12" '
            f'fill="{colour(index)}">'
            f"{escape(label)}</text>"
        )
    return chart_frame(y_label, axes(y_label, y_low, y_high, x_ticks, at, x_low) + "".join(marks))


def axes(
    y_label: str, y_low: float, y_high: float, x_ticks: dict[float, str], at: Any, x_low: float
) -> str:
    pad, bottom = CHART_PAD, CHART_HEIGHT - CHART_PAD
    parts = [
        f'<line x1="{pad}" y1="{bottom}" x2="{CHART_WIDTH - pad - LEGEND_WIDTH}" y2="{bottom}" '
        'stroke="#999"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{bottom}" stroke="#999"/>',
        f'<text x="4" y="{pad - 12}">{escape(y_label)}</text>',
    ]
    for value in (y_low, (y_low + y_high) / 2, y_high):
        y = at(x_low, value)[1]
        parts.append(
            f'<text x="{pad - 4}" y="{y + 4:.1f}" text-anchor="end">{number(value)}</text>'
        )
    for x_value, label in x_ticks.items():
        x = at(x_value, y_low)[0]
        parts.append(
            f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{escape(label)}</text>'
        )
    return '<g font-size="11" fill="#555">' + "".join(parts) + "</g>"


def bar_chart(bars: list[tuple[str, float]], x_label: str, limit: float | None = None) -> str:
    """Horizontal bars in the order given, a label and the value on each (a value at or below
    zero gets a sliver); `limit` draws the threshold."""
    row, left, right = 22, 230, 80
    height = CHART_PAD + row * len(bars) + 24
    high = max([value for _, value in bars] + [limit or 0]) or 1.0
    scale = (CHART_WIDTH - left - right) / high
    marks = []
    for index, (label, value) in enumerate(bars):
        y = CHART_PAD + row * index
        fill = "#cf222e" if limit is not None and value > limit else "#1f6feb"
        length = max(value * scale, 1.0)
        marks.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" font-size="12">'
            f"{escape(label if len(label) <= 32 else label[:31] + '…')}</text>"
            f'<rect class="mark" x="{left}" y="{y + 3}" width="{length:.1f}" '
            f'height="{row - 6}" fill="{fill}"><title>{escape(label)}: {number(value)}</title>'
            f'</rect><text x="{left + length + 4:.1f}" y="{y + 14}" '
            f'font-size="11" fill="#555">{number(value)}</text>'
        )
    if limit is not None:
        x = left + limit * scale
        marks.append(
            f'<line x1="{x:.1f}" y1="{CHART_PAD - 6}" x2="{x:.1f}" y2="{height - 20}" '
            f'stroke="#cf222e" stroke-dasharray="4"><title>threshold {number(limit)}</title></line>'
        )
    caption = (
        f'<text x="{left}" y="{CHART_PAD - 14}" font-size="12" fill="#555">{escape(x_label)}</text>'
    )
    return chart_frame(x_label, caption + "".join(marks), height)


def column_chart(
    columns: list[tuple[float, float, float]], y_label: str, x_ticks: dict[float, str]
) -> str:
    """A column per x (e.g. a day): its total, with the part of it in red (e.g. errors)."""
    width, height, pad = CHART_WIDTH, CHART_HEIGHT, CHART_PAD
    plot_width, plot_height = width - 2 * pad - LEGEND_WIDTH, height - 2 * pad
    xs = [x for x, _, _ in columns]
    x_low, x_span = min(xs), (max(xs) - min(xs)) or 1.0
    high = max(total for _, total, _ in columns) or 1.0
    slot = max(plot_width / (x_span + 1), 1.0)

    def at(x: float, y: float) -> tuple[float, float]:
        return pad + (x - x_low) / (x_span + 1) * plot_width, pad + (1 - y / high) * plot_height

    marks = []
    for x, total, part in columns:
        left, top = at(x, total)
        marks.append(
            f'<rect class="mark" x="{left:.1f}" y="{top:.1f}" width="{slot * 0.8:.1f}" '
            f'height="{pad + plot_height - top:.1f}" fill="#1f6feb"/>'
        )
        if part:
            marks.append(
                f'<rect x="{left:.1f}" y="{at(x, part)[1]:.1f}" width="{slot * 0.8:.1f}" '
                f'height="{pad + plot_height - at(x, part)[1]:.1f}" fill="#cf222e"/>'
            )
    return chart_frame(y_label, axes(y_label, 0.0, high, x_ticks, at, x_low) + "".join(marks))
