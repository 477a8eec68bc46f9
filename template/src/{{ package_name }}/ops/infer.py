"""`nox -s schema`: infer the contract from a data file, write schema.py, and say why.

Each column's kind, nullability, range (widened by a margin of its observed span, never below
zero for a column with no negative value), category set and id-likeness is decided from the data
and printed with its reason. When schema.py already declares a contract, every difference from it
is printed too, so new data never widens the contract silently: the team reviews the diff.

pandera's `infer_schema` was not used: it gives dtypes and exact observed bounds, but neither
categories, id or free-text columns, dates held as text, nor the task and its classes.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..contract import (
    Boolean,
    Categorical,
    Column,
    Contract,
    DateTime,
    Integer,
    Numeric,
    PassThrough,
    Target,
    Task,
    Text,
)

ID_NAME = re.compile(r"(^|[_\W])(id|key|uuid|guid)$|^id[_\W]", re.IGNORECASE)
MAX_CATEGORIES = 50
MAX_CLASSES = 20  # a whole-number target with more distinct values is a quantity
BOOLEAN_WORDS = {"true", "false", "yes", "no", "t", "f", "y", "n"}


class InferenceError(ValueError):
    """The data cannot give a contract; the message says what to change."""


@dataclass
class Inferred:
    contract: Contract
    reasons: list[str] = field(default_factory=list)


def read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        # Everything as text first, so "NA" stays a category and ids keep their leading zeros.
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    raise InferenceError(f"{path}: use a .csv or .parquet file, not {path.suffix or 'no suffix'}")


def outward(low: float, high: float, margin: float, whole: bool) -> tuple[float, float]:
    """[low, high] widened by margin x span, rounded outward to three significant digits."""
    span = high - low or abs(high) or 1.0
    lower, upper = low - margin * span, high + margin * span
    if low >= 0:
        lower = max(0.0, lower)
    step = 10.0 ** (math.floor(math.log10(span)) - 2)
    if whole:
        step = max(1.0, step)
    lower, upper = math.floor(lower / step) * step, math.ceil(upper / step) * step
    digits = max(0, -math.floor(math.log10(step)))
    return round(lower, digits), round(upper, digits)


def as_numbers(values: pd.Series) -> pd.Series | None:
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers if numbers.notna().all() else None


def as_instants(values: pd.Series) -> pd.Series | None:
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values.dt.tz_localize("UTC") if values.dt.tz is None else values
    if pd.api.types.is_numeric_dtype(values.dtype) or values.empty:
        return None
    text = values.astype("string")
    if not text.str.match(r"^\d{4}-\d{2}-\d{2}").all():
        return None
    instants = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    return instants if instants.notna().all() else None


def column_kind(name: str, raw: pd.Series, margin: float) -> tuple[Column, str]:
    """The column's contract entry and why."""
    present = raw.dropna()
    present = present[present.astype("string").str.strip() != ""]
    nullable = len(present) < len(raw)
    empty = f"; {len(raw) - len(present)} empty value(s), so nullable" if nullable else ""
    if present.empty:
        return PassThrough(name), "pass-through: every value is empty"
    distinct = present.nunique()
    unique = distinct == len(present) == len(raw)
    if pd.api.types.is_bool_dtype(present.dtype) or (
        not pd.api.types.is_numeric_dtype(present.dtype)
        and set(present.astype("string").str.strip().str.lower()) <= BOOLEAN_WORDS
    ):
        return Boolean(name, nullable=nullable), f"boolean: only true/false values{empty}"
    if (instants := as_instants(present)) is not None:
        days = (instants.max() - instants.min()).total_seconds() / 86400
        widen = pd.Timedelta(days=math.ceil(max(days, 1) * margin))
        earliest = (instants.min() - widen).strftime("%Y-%m-%d")
        latest = (instants.max() + widen + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
        column = DateTime(name, earliest=earliest, latest=latest, nullable=nullable)
        return column, (
            f"date/time: ISO 8601 from {instants.min():%Y-%m-%d} to {instants.max():%Y-%m-%d}, "
            f"allowed {earliest} to {latest}{empty}"
        )
    numbers = as_numbers(present)
    if numbers is not None:
        # Whole numbers written as such (1200, not 1200.0): amounts that happen to be round
        # stay real numbers, so a later 1200.5 is not refused.
        written_whole = (
            pd.api.types.is_integer_dtype(present.dtype)
            if pd.api.types.is_numeric_dtype(present.dtype)
            else not present.astype("string").str.contains(r"[.eE]").any()
        )
        whole = written_whole and bool((numbers == np.floor(numbers)).all())
        if whole and unique and ID_NAME.search(name):
            return PassThrough(name), "pass-through (id): a different whole number in every row"
        low, high = outward(float(numbers.min()), float(numbers.max()), margin, whole)
        observed = f"observed {numbers.min():g} to {numbers.max():g}"
        if whole:
            column = Integer(name, minimum=int(low), maximum=int(high), nullable=nullable)
            return column, f"integer: {observed}, allowed {int(low)} to {int(high)}{empty}"
        column = Numeric(name, minimum=low, maximum=high, nullable=nullable)
        return column, f"number: {observed}, allowed {low:g} to {high:g}{empty}"
    text = present.astype("string")
    words = text.str.split().str.len()
    if unique and (ID_NAME.search(name) or words.max() == 1):
        return PassThrough(name), "pass-through (id): a different value in every row"
    if distinct <= MAX_CATEGORIES and words.mean() < 4:
        values = tuple(sorted(text.unique()))
        column = Categorical(name, values=values, nullable=nullable)
        return column, f"category: {distinct} distinct values{empty}"
    longest = int(text.str.len().max())
    column = Text(name, max_length=2 * longest, nullable=nullable)
    return column, (
        f"free text: {distinct} distinct values, {words.mean():.1f} words on average; "
        f"validated and kept, but not read by the default model{empty}"
    )


def infer_target(
    raw: pd.Series, name: str, task: Task | None, positive: str | None, margin: float
) -> tuple[Target, str]:
    if raw.isna().any() or (raw.astype("string").str.strip() == "").any():
        raise InferenceError(f"the target {name!r} has empty values; drop or label those rows")
    numbers = as_numbers(raw)
    whole = numbers is not None and bool((numbers == np.floor(numbers)).all())
    distinct = raw.nunique()
    if task is None:
        if numbers is None or (whole and distinct <= MAX_CLASSES):
            task = Task.BINARY if distinct == 2 else Task.MULTICLASS
            why = f"{distinct} distinct values, so {task} classification"
        else:
            task = Task.REGRESSION
            why = "numbers with many distinct values, so regression"
    else:
        why = "task as given"
    if task is Task.REGRESSION:
        if numbers is None:
            raise InferenceError(f"a regression target must be numbers; {name!r} is not")
        low, high = outward(float(numbers.min()), float(numbers.max()), margin, whole=False)
        return Target(name=name, task=task, minimum=low, maximum=high), (
            f"{why}; observed {numbers.min():g} to {numbers.max():g}, allowed {low:g} to {high:g}"
        )
    classes: tuple[Any, ...] = (
        tuple(sorted(int(value) for value in numbers.unique()))
        if whole
        else tuple(sorted(raw.astype("string").unique()))
    )
    if task is Task.BINARY and len(classes) != 2:
        raise InferenceError(f"binary needs two classes; {name!r} has {len(classes)}: use --task")
    if task is not Task.BINARY:
        return Target(name=name, task=task, classes=classes), f"{why}: {classes}"
    if positive is not None:
        chosen = next((value for value in classes if str(value) == positive), None)
        if chosen is None:
            raise InferenceError(f"--positive {positive} is not one of the classes {classes}")
        reason = "as given"
    elif [str(value).lower() for value in classes] in (["0", "1"], ["false", "true"]):
        chosen, reason = classes[1], "the true/1 class"
    else:
        counts = raw.astype("string").value_counts()
        chosen = min(classes, key=lambda value: (counts[str(value)], str(value)))
        reason = "the rarer class; pass --positive to choose"
    target = Target(name=name, task=task, classes=classes, positive=chosen)
    return target, f"{why}: {classes}, positive class {chosen!r} ({reason})"


def infer(
    frame: pd.DataFrame,
    target: str,
    *,
    task: Task | None = None,
    positive: str | None = None,
    margin: float = 0.5,
) -> Inferred:
    if target not in frame.columns:
        raise InferenceError(
            f"no column {target!r}; the columns are {', '.join(map(str, frame.columns))}"
        )
    inferred_target, why = infer_target(frame[target], target, task, positive, margin)
    reasons = [f"{target}: target, {why}"]
    columns = []
    for name in frame.columns:
        if name == target:
            continue
        column, reason = column_kind(str(name), frame[name], margin)
        columns.append(column)
        reasons.append(f"{name}: {reason}")
    return Inferred(Contract(columns=tuple(columns), target=inferred_target), reasons)


def differences(old: Contract, new: Contract) -> list[str]:
    """What the new contract changes, column by column."""
    if not set(old.names) & set(new.names):
        return [f"every column: {len(old.names)} removed, {len(new.names)} added (another table)"]
    changes = []
    for name in old.names:
        if name not in new.by_name:
            changes.append(f"{name}: removed")
    for column in new.columns:
        before = old.by_name.get(column.name)
        if before is None:
            changes.append(f"{column.name}: added as {column.kind}")
        elif before != column:
            changes.append(f"{column.name}: {code(before)} -> {code(column)}")
    if old.target != new.target:
        changes.append(f"target: {code(old.target)} -> {code(new.target)}")
    return changes


def source(contract: Contract, data_file: str) -> str:
    """schema.py's text for the contract."""
    kinds = sorted({type(column).__name__ for column in contract.columns})
    lines = [
        '"""The input contract: the columns a record has, the target and the task.',
        "",
        f"Inferred by `nox -s schema` from {data_file}; review it and edit as you know better.",
        "`ops/` reads the science through `CONTRACT` only: training validation, the service's",
        "request model and batch scoring all derive from it (see contract.py for the kinds).",
        '"""',
        "",
        f"from .contract import {', '.join(sorted([*kinds, 'Contract', 'Target', 'Task']))}",
        "",
        "CONTRACT = Contract(",
        "    columns=(",
        *(f"        {code(column)}," for column in contract.columns),
        "    ),",
        f"    target={code(contract.target)},",
        ")",
        "",
    ]
    return "\n".join(lines)


def code(item: Any) -> str:
    """A constructor call that recreates a kind with its non-default fields."""
    defaults = type(item)(**{"name": item.name, **required(item)})
    arguments = [repr(item.name)] if not isinstance(item, Target) else [f"name={item.name!r}"]
    for key, value in item.__dict__.items():
        if key in ("name", "by_name") or (
            getattr(defaults, key) == value and key not in required(item)
        ):
            continue
        arguments.append(
            f"{key}=Task.{value.name}" if isinstance(value, Task) else f"{key}={value!r}"
        )
    return f"{type(item).__name__}({', '.join(arguments)})"


def required(item: Any) -> dict[str, Any]:
    return {key: getattr(item, key) for key in ("values", "task") if hasattr(item, key)}


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    # The environment's own formatter, so the file passes `nox -s lint` as written.
    beside = Path(sys.executable).parent / "ruff"
    ruff = str(beside) if beside.is_file() else shutil.which("ruff")
    if ruff:
        subprocess.run([ruff, "format", "--quiet", str(path)], check=False)
