"""The candidate report: the gate's verdict and the evidence, for people who are not engineers.

Writes `candidate.md` and a self-contained `candidate.html` (inline SVG, no scripts, nothing
fetched) with the key metrics and the ROC curves and confusion matrices side by side.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from .gate import Evaluation, GateResult

METRIC_NAMES = {
    "roc_auc": "ROC AUC (ranking quality, 1 is perfect)",
    "accuracy": "Accuracy (share of correct answers)",
    "precision": "Precision (flagged cases that were real)",
    "recall": "Recall (real cases that were flagged)",
    "f1": "F1 (balance of precision and recall)",
}
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }
.verdict { padding: 1rem; border-radius: 6px; font-size: 1.2rem; }
.pass { background: #e6f4ea; border: 1px solid #2da44e; }
.fail { background: #fdecea; border: 1px solid #cf222e; }
table { border-collapse: collapse; margin: 1rem 0; }
td, th { border: 1px solid #ddd; padding: 0.4rem 0.8rem; text-align: left; }
.side { display: flex; gap: 2rem; flex-wrap: wrap; align-items: flex-start; }
"""
CONFUSION_NAMES = {
    "true_positive": "Real cases flagged",
    "false_negative": "Real cases missed",
    "false_positive": "False alarms",
    "true_negative": "Correctly cleared",
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
    for key, label in METRIC_NAMES.items():
        candidate = result.candidate.scores[key]
        if result.production is None:
            rows.append((label, f"{candidate:.4f}", "none yet", ""))
            continue
        production = result.production.scores[key]
        rows.append(
            (label, f"{candidate:.4f}", f"{production:.4f}", f"{candidate - production:+.4f}")
        )
    return rows


def markdown(result: GateResult, version: int, manifest: dict[str, Any]) -> str:
    production = f"version {result.production_version}" if result.production_version else "none yet"
    lines = [
        f"# Candidate model: version {version}",
        "",
        f"**{verdict(result, version)}**",
        "",
        f"Compared on the same {sum(result.candidate.confusion.values())} holdout rows with the "
        f"production model ({production}). The gate asks for {result.metric} of at least "
        f"{result.minimum:.4f} and at most {result.max_regression:.4f} below production.",
        "",
        "| metric | candidate | production | change |",
        "|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in metric_rows(result)),
        "",
        "| outcome on the holdout | candidate | production |",
        "|---|---|---|",
    ]
    for key, label in CONFUSION_NAMES.items():
        before = result.production.confusion[key] if result.production else ""
        lines.append(f"| {label} | {result.candidate.confusion[key]} | {before} |")
    lines += [
        "",
        f"Built from commit `{manifest['git_commit'][:12]}` on data "
        + ", ".join(f"`{path}` ({md5[:8]})" for path, md5 in manifest["data_hashes"].items())
        + f", created {manifest['created_at']}.",
        "",
        serving_sentence(manifest),
        "",
    ]
    return "\n".join(lines)


def roc_svg(curves: dict[str, tuple[Evaluation, str]]) -> str:
    """ROC curves on a 300x300 plot: x is the false-alarm rate, y the share of cases caught."""
    size, pad = 300, 40
    lines = []
    for label, (evaluation, colour) in curves.items():
        points = " ".join(
            f"{pad + x * size:.1f},{pad + (1 - y) * size:.1f}" for x, y in evaluation.roc
        )
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="3" points="{points}">'
            f"<title>{escape(label)}</title></polyline>"
        )
    legend = "".join(
        f'<text x="{pad + 150}" y="{pad + 230 + 18 * i}" fill="{colour}">{escape(label)}</text>'
        for i, (label, (_, colour)) in enumerate(curves.items())
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 2 * pad}" '
        f'height="{size + 2 * pad}" role="img" aria-label="ROC curves">'
        f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" stroke="#999"/>'
        f'<line x1="{pad}" y1="{pad + size}" x2="{pad + size}" y2="{pad}" stroke="#ccc" '
        'stroke-dasharray="4"/>'
        f"{''.join(lines)}{legend}"
        f'<text x="{pad + size / 2}" y="{size + 2 * pad - 8}" text-anchor="middle">'
        "false alarm rate</text>"
        f'<text x="12" y="{pad + size / 2}" transform="rotate(-90 12 {pad + size / 2})" '
        'text-anchor="middle">share of real cases caught</text></svg>'
    )


def html(result: GateResult, version: int, manifest: dict[str, Any]) -> str:
    status = "pass" if result.passed else "fail"
    metric_table = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>"
        for row in metric_rows(result)
    )
    # Production first, so the candidate's curve is drawn on top where the two coincide.
    curves = {}
    if result.production:
        curves[f"production (version {result.production_version})"] = (result.production, "#999")
    curves[f"candidate (version {version})"] = (result.candidate, "#1f6feb")
    confusion_rows = "".join(
        f"<tr><td>{label}</td><td>{result.candidate.confusion[key]}</td>"
        f"<td>{result.production.confusion[key] if result.production else ''}</td></tr>"
        for key, label in CONFUSION_NAMES.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Candidate model: version {version}</title>
<style>{STYLE}</style></head><body>
<h1>Candidate model: version {version}</h1>
<p class="verdict {status}">{escape(verdict(result, version))}</p>
<p>Both models were scored on the same {sum(result.candidate.confusion.values())} holdout rows.
The gate asks for {escape(result.metric)} of at least {result.minimum:.4f}, and at most
{result.max_regression:.4f} below the production model.</p>
<div class="side">
<div><h2>Key metrics</h2><table>
<tr><th>metric</th><th>candidate</th><th>production</th><th>change</th></tr>{metric_table}
</table>
<h2>Outcomes on the holdout</h2><table>
<tr><th></th><th>candidate</th><th>production</th></tr>{confusion_rows}</table></div>
<div><h2>ROC curves</h2>{roc_svg(curves)}</div>
</div>
<p>Built from commit <code>{escape(manifest["git_commit"][:12])}</code>, created
{escape(manifest["created_at"])}.</p>
<p>{escape(serving_sentence(manifest))}</p>
</body></html>
"""


def write(result: GateResult, version: int, manifest: dict[str, Any], reports_dir: Path) -> Path:
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / "candidate.md").write_text(markdown(result, version, manifest))
    page = reports_dir / "candidate.html"
    page.write_text(html(result, version, manifest))
    return page
