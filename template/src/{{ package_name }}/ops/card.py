"""The model card: what a version is for, what it learnt from, how well and on what it relies, and
where it must not be trusted; computed once at package time, kept in the bundle as `card.json`
and `card.html`, and shown on the dashboard with its approvals from the audit log.

Global feature importance is permutation importance on the holdout (scikit-learn's, so it works
for any model family): how much the task's gate metric worsens when one feature's values are
shuffled. A fixed seed and a fixed subsample keep the card, and so the bundle, the same when it is
rebuilt.
"""

from __future__ import annotations

import json
import tomllib
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from ..contract import Contract, DateTime
from ..tasks import DECIMALS, METRICS, predict
from .report import STYLE, bar_chart
from .settings import Settings
from .sql import summary

CARD_MEMBER = "card.json"
CARD_PAGE_MEMBER = "card.html"
IMPORTANCE_ROWS = 2_000  # enough for stable ranks; a larger holdout is subsampled
IMPORTANCE_REPEATS = 5
SEED = 0


def importance(pipeline: Any, holdout: pd.DataFrame, contract: Contract, metric: str) -> dict:
    """Permutation importance of every feature on (a fixed subsample of) the holdout."""
    from sklearn.inspection import permutation_importance

    target = contract.target
    if len(holdout) > IMPORTANCE_ROWS:
        holdout = holdout.sample(IMPORTANCE_ROWS, random_state=SEED).sort_index()
    chosen = METRICS[target.task][metric]
    sign = 1.0 if chosen.higher_is_better else -1.0

    def quality(model: Any, frame: pd.DataFrame, actual: np.ndarray) -> float:
        # Higher is better for the shuffling to measure a loss, whatever the metric's direction.
        return sign * chosen.compute(actual, predict(model, frame, target.task), target)

    found = permutation_importance(
        pipeline,
        contract.model_frame(holdout),
        target.to_model(holdout[target.name]),
        scoring=quality,
        n_repeats=IMPORTANCE_REPEATS,
        random_state=SEED,
        n_jobs=1,
    )
    features = [
        {
            "feature": column.name,
            "mean": round(float(mean), DECIMALS),
            "std": round(float(spread), DECIMALS),
        }
        for column, mean, spread in zip(
            contract.features, found.importances_mean, found.importances_std, strict=True
        )
    ]
    features.sort(key=lambda entry: (-entry["mean"], entry["feature"]))
    return {
        "metric": metric,
        "rows": len(holdout),
        "repeats": IMPORTANCE_REPEATS,
        "features": features,
    }


def period(contract: Contract, *frames: pd.DataFrame) -> dict[str, dict[str, str]]:
    """First and last value of each date/time column, over the rows trained on and held out."""
    columns = [column.name for column in contract.features if isinstance(column, DateTime)]
    if not columns:
        return {}
    frame = pd.concat([rows[columns] for rows in frames])
    return {
        name: {"start": str(frame[name].min()), "end": str(frame[name].max())}
        for name in columns
        if frame[name].notna().any()
    }


def build(
    settings: Settings,
    pipeline: Any,
    contract: Contract,
    training: pd.DataFrame,
    holdout: pd.DataFrame,
    manifest: dict[str, Any],
) -> dict[str, Any]:
    """The card of the version `manifest` (without its members yet) describes."""
    pyproject = tomllib.loads((settings.project_dir / "pyproject.toml").read_text("utf-8"))
    target = contract.target
    quality = manifest["data_quality"]
    held_out = int(manifest["metrics"].get("holdout_rows", len(holdout)))
    read = quality.get("rows_read")
    rejected = quality.get("rows_rejected", 0)
    gate_metric = manifest["params"].get("gate", {}).get("metric") or next(
        iter(METRICS[target.task])
    )
    limits = [
        "Answers only for records that satisfy the input contract below; anything else is "
        "refused with a message naming the field."
    ]
    if rejected:
        limits.append(
            f"{rejected:,} of {read:,} raw rows ({format(quality['rejected_share'], '.1%')}) "
            "broke the contract and were set aside before training: data like them was never "
            "learnt from."
        )
    if target.task.is_classification:
        limits.append(
            "It only ever answers one of the classes it was trained on: "
            + ", ".join(map(str, target.classes))
            + "."
        )
    elif target.minimum is not None or target.maximum is not None:
        limits.append(f"The target was declared between {target.minimum} and {target.maximum}.")
    return {
        "model_name": manifest["model_name"],
        "purpose": {
            "description": pyproject.get("project", {}).get("description", ""),
            "task": str(target.task),
            "target": target.name,
            "classes": [str(name) for name in target.classes],
            "positive_class": None if target.positive is None else str(target.positive),
        },
        "data": {
            "rows_trained": None if read is None else read - rejected - held_out,
            "rows_held_out": held_out,
            "rows_read": read,
            "rows_quarantined": rejected,
            "quarantined_share": quality.get("rejected_share", 0.0),
            "period": period(contract, training, holdout),
            "hashes": manifest["data_hashes"],
        },
        "metrics": {
            name: {
                "value": manifest["metrics"].get(name),
                "label": metric.label,
                "higher_is_better": metric.higher_is_better,
            }
            for name, metric in METRICS[target.task].items()
        },
        "importance": importance(pipeline, holdout, contract, gate_metric),
        "limits": {"notes": limits, "contract": contract.to_json()},
        "lineage": {
            "git_commit": manifest["git_commit"],
            "dirty": manifest["dirty"],
            "data_hashes": manifest["data_hashes"],
            "params": manifest["params"],
            "lock_file": manifest["lock_file"],
            "lock_sha256": manifest["lock_sha256"],
            "python_version": manifest["python_version"],
            "serving_runtime": manifest["serving_model"]["runtime"],
            "sql_scoring": summary(manifest.get("sql")),
        },
    }


def column_limit(column: dict[str, Any]) -> str:
    """What the contract allows of a column, in words."""
    allowed = [
        f"{key} {column[key]}" for key in ("minimum", "maximum") if column.get(key) is not None
    ]
    if column.get("values"):
        allowed.append("one of " + ", ".join(map(str, column["values"])))
    if column.get("nullable"):
        allowed.append("may be empty")
    return "; ".join(allowed) or "any value of its kind"


def section(card: dict[str, Any], approvals: list[str] | None = None) -> str:
    """The card as an HTML fragment: for card.html and for each version on the dashboard."""
    purpose, data, lineage = card["purpose"], card["data"], card["lineage"]
    what = (
        f"predicts <b>{escape(purpose['target'])}</b> "
        + (
            f"(one of {escape(', '.join(purpose['classes']))})"
            if purpose["classes"]
            else "(a number)"
        )
        + f": a {escape(purpose['task'])} model."
    )
    period = "".join(
        f"<li>{escape(name)} from {escape(span['start'])} to {escape(span['end'])}</li>"
        for name, span in data["period"].items()
    )
    trained = (
        "an unknown number of" if data["rows_trained"] is None else f"{data['rows_trained']:,}"
    )
    metrics = "".join(
        f"<li>{escape(entry['label'])}: <b>{entry['value']:.4f}</b></li>"
        for entry in card["metrics"].values()
        if entry["value"] is not None
    )
    ranked = card["importance"]["features"]
    chart = bar_chart(
        [(entry["feature"], entry["mean"]) for entry in ranked],
        f"how much {card['importance']['metric']} worsens when the feature is shuffled",
    )
    columns = card["limits"]["contract"].get("columns", [])
    allowed = "".join(
        f"<li><b>{escape(str(column.get('name')))}</b>: {escape(column_limit(column))}</li>"
        for column in columns
    )
    notes = "".join(f"<li>{escape(note)}</li>" for note in card["limits"]["notes"])
    approved = "".join(f"<li>{escape(line)}</li>" for line in approvals or []) or (
        "<li>not approved for any stage yet</li>"
    )
    hashes = ", ".join(
        f"{escape(path)} <code>{md5[:12]}</code>" for path, md5 in data["hashes"].items()
    )
    dirty = " (uncommitted changes)" if lineage["dirty"] else ""
    # Cards of bundles made before SQL scoring do not say.
    sql_scoring = lineage.get("sql_scoring")
    sql_sentence = (
        f" Scores inside a database in SQL: {escape(sql_scoring)}." if sql_scoring else ""
    )
    return f"""<h3>Purpose</h3>
<p>{escape(purpose["description"])}</p><p>This model {what}</p>
<h3>Data</h3>
<p>Trained on {trained} rows; judged on {data["rows_held_out"]:,} rows it never saw.
{data["rows_quarantined"]:,} rows were set aside for breaking the input contract.
Data: {hashes}.</p>
{f"<ul>{period}</ul>" if period else ""}
<h3>How well it does on the held-out rows</h3><ul>{metrics}</ul>
<h3>What it relies on</h3>
<p>The longer the bar, the more the answers depend on that input (measured on
{card["importance"]["rows"]:,} held-out rows, each shuffled {card["importance"]["repeats"]} times).
A bar near zero means the model hardly uses it.</p>{chart}
<h3>Known limits</h3><ul>{notes}</ul>
<details><summary>What each input may be</summary><ul>{allowed}</ul></details>
<h3>Approvals</h3><ul>{approved}</ul>
<h3>Lineage</h3>
<p>Commit <code>{escape(lineage["git_commit"][:12])}</code>{dirty}, Python
{escape(lineage["python_version"])}, {escape(lineage["lock_file"])} sha256
<code>{escape(lineage["lock_sha256"][:16])}</code>, serves with
{escape(lineage["serving_runtime"])}.{sql_sentence}</p>
<details><summary>Parameters</summary><pre>{escape(_params(lineage["params"]))}</pre></details>
"""


def _params(params: dict[str, Any]) -> str:
    return json.dumps(params, indent=2, sort_keys=True, default=str)


def page(card: dict[str, Any]) -> str:
    """card.html: the card on its own, readable with no server."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Model card: {escape(card["model_name"])}</title><style>{STYLE}</style></head><body>
<h1>Model card: {escape(card["model_name"])}</h1>
{section(card, ["approvals are recorded in the audit log; the dashboard shows them"])}
</body></html>
"""
