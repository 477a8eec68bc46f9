"""Drift: how far the rows a model scores have moved from the rows it learned from.

At package time `reference(...)` profiles the training data per feature and the holdout
predictions, and the bundle keeps it as `reference.json`. Its bins are fixed there, once, and
every later count uses the same ones: monitoring over the inference log, and the service's
gauges (`LiveProfile`). A bin layout per column kind:

    number, integer, date/time  ~10 quantile bins of the training values (dates as epoch seconds)
    boolean, category           each allowed value, then "other"
    text                        ~10 quantile bins of the text's length
    every kind                  a last bin for missing values

The prediction's profile is the share of each class (classification) or quantile bins of the
predicted value (regression).

The distance is the population stability index, PSI = sum over bins of (a - e) * ln(a / e),
with e the reference's share of a bin and a the live share, both floored at FLOOR so an empty
bin counts as rare rather than infinite. Rules of thumb: below 0.1 stable, 0.1-0.2 moving,
above 0.2 shifted.

Written here rather than taken from a drift library (evidently, nannyml, alibi-detect): those
bring hundreds of MB of dependencies into the serving environment for what is a few lines of
NumPy over bins that must be frozen into the bundle anyway.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from ..contract import (
    EPOCH,
    Boolean,
    Categorical,
    Column,
    Contract,
    DateTime,
    PassThrough,
    Target,
    Text,
)
from . import inference

QUANTILES = np.linspace(0.1, 0.9, 9)  # inner edges of ~10 bins
FLOOR = 1e-4  # the smallest share a bin counts with, so an empty bin stays finite
INPUT = "input."  # the inference log's prefix of input columns


def numbers(column: Column, values: pd.Series) -> np.ndarray | None:
    """The values a binned-by-edges column is counted on (NaN when missing), or None for a
    column counted by value."""
    if isinstance(column, (Boolean, Categorical)):
        return None
    parsed = column.parse(values)
    if isinstance(column, Text):
        return parsed.str.len().to_numpy(dtype="float64", na_value=np.nan)
    if isinstance(column, DateTime):
        seconds = (parsed - pd.Timestamp(EPOCH)).dt.total_seconds()
        return seconds.to_numpy(dtype="float64", na_value=np.nan)
    return parsed.to_numpy(dtype="float64", na_value=np.nan)


def labels(column: Column, values: pd.Series) -> pd.Series:
    """Values counted by value, as text ("true"/"false" for booleans), NA when missing."""
    if isinstance(column, Boolean):
        parsed = column.parse(values)
        return parsed.map({True: "true", False: "false"}).astype("string")
    return values.astype("string").where(values.notna())


def edges_of(values: np.ndarray) -> list[float]:
    present = values[~np.isnan(values)]
    if present.size == 0:
        return []
    return sorted({float(edge) for edge in np.quantile(present, QUANTILES)})


def counts(spec: dict[str, Any], values: np.ndarray | pd.Series) -> np.ndarray:
    """How many values fall in each bin of `spec` (last bin: missing)."""
    if "edges" in spec:
        values = np.asarray(values, dtype="float64")
        missing = np.isnan(values)
        # Bin i holds edges[i-1] < value <= edges[i]; the last value bin is above every edge.
        placed = np.searchsorted(np.asarray(spec["edges"]), values[~missing], side="left")
        found = np.bincount(placed, minlength=len(spec["edges"]) + 1)
    else:
        text = pd.Series(values, dtype="string")
        missing = text.isna().to_numpy()
        known = {value: i for i, value in enumerate(spec["values"])}
        placed = text[~missing].map(lambda value: known.get(value, len(known)))
        found = np.bincount(placed.to_numpy(dtype="int64"), minlength=len(known) + 1)
    return np.append(found, missing.sum())


def binned(spec: dict[str, Any], counted: np.ndarray) -> dict[str, Any]:
    total = counted.sum()
    shares = counted / total if total else counted.astype("float64")
    return {**spec, "shares": [round(float(share), 6) for share in shares]}


def psi(expected: list[float], actual: np.ndarray) -> float | None:
    """The population stability index of live counts against reference shares; None without
    live rows."""
    total = actual.sum()
    if not total:
        return None
    e = np.maximum(np.asarray(expected, dtype="float64"), FLOOR)
    a = np.maximum(actual / total, FLOOR)
    return round(float(np.sum((a - e) * np.log(a / e))), 6)


def feature_spec(column: Column, values: pd.Series) -> dict[str, Any]:
    if isinstance(column, Boolean):
        spec: dict[str, Any] = {"values": ["false", "true"]}
    elif isinstance(column, Categorical):
        spec = {"values": list(column.values)}
    else:
        spec = {"edges": edges_of(numbers(column, values))}
    measured = "length" if isinstance(column, Text) else column.kind
    return {"measure": measured, **spec}


def prediction_values(target: Target, predicted: pd.Series) -> np.ndarray | pd.Series:
    if target.task.is_classification:
        return predicted.map(str, na_action="ignore").astype("string")
    return pd.to_numeric(predicted, errors="coerce").to_numpy(dtype="float64")


def reference(contract: Contract, train: pd.DataFrame, predicted: pd.Series) -> dict[str, Any]:
    """The profile of the training rows (per feature) and of the holdout predictions."""
    features = {}
    for column in contract.features:
        spec = feature_spec(column, train[column.name])
        features[column.name] = binned(spec, counts(spec, values_of(column, train[column.name])))
    target = contract.target
    values = prediction_values(target, predicted)
    if target.task.is_classification:
        spec = {"measure": "class", "values": [str(value) for value in target.classes]}
    else:
        spec = {"measure": "value", "edges": edges_of(values)}
    return {
        "training_rows": len(train),
        "features": features,
        "prediction": binned(spec, counts(spec, values)),
    }


def values_of(column: Column, values: pd.Series) -> np.ndarray | pd.Series:
    converted = numbers(column, values)
    return labels(column, values) if converted is None else converted


class LiveProfile:
    """Counts of the rows a version scored, in the reference's bins; cheap to add to, so a
    background writer can feed it every batch it logs.

    `add` takes rows in the inference log's layout (`input.<column>`, `prediction`, `status`);
    rows a request had refused carry no inputs and are not counted.
    """

    def __init__(self, reference: dict[str, Any], contract: Contract) -> None:
        self.reference = reference
        self.contract = contract
        self.rows = 0
        self.features = {
            name: np.zeros(len(spec["shares"]), dtype="int64")
            for name, spec in reference["features"].items()
        }
        self.prediction = np.zeros(len(reference["prediction"]["shares"]), dtype="int64")

    def add(self, frame: pd.DataFrame) -> LiveProfile:
        if "status" in frame:
            frame = frame[frame["status"] == 200]
        if frame.empty:
            return self
        self.rows += len(frame)
        for name, counted in self.features.items():
            column = self.contract.by_name.get(name)
            if column is None or isinstance(column, PassThrough) or INPUT + name not in frame:
                continue  # a feature the log excludes, or a contract that changed
            spec = self.reference["features"][name]
            counted += counts(spec, values_of(column, frame[INPUT + name]))
        values = prediction_values(self.contract.target, frame["prediction"])
        self.prediction += counts(self.reference["prediction"], values)
        return self

    def psi(self) -> dict[str, Any]:
        """{"rows": n, "drift": {feature: psi}, "prediction_drift": psi}; PSIs are None until
        there are rows (a feature the log excludes stays None)."""
        drift = {
            name: psi(self.reference["features"][name]["shares"], counted)
            for name, counted in self.features.items()
        }
        shares = self.reference["prediction"]["shares"]
        return {"rows": self.rows, "drift": drift, "prediction_drift": psi(shares, self.prediction)}


class LoggedDrift:
    """The drift of a served version since it loaded, from the inference log: the service's
    gauges, computed when scraped and never on /predict's path. Each update reads only the log
    files it has not read yet (a log file is written once, whole), so it counts the rows every
    worker and replica of the service logged for this version."""

    def __init__(
        self, fs: Any, root: str, version: int, since: datetime, reference: dict, contract: Contract
    ) -> None:
        self.fs, self.root, self.version, self.since = fs, root, version, since
        self.profile = LiveProfile(reference, contract)
        self.read: set[str] = set()
        self.lock = threading.Lock()  # two scrapes at once must not count a file twice

    def update(self) -> dict[str, Any]:
        with self.lock:
            paths = inference.files(self.fs, self.root, self.since, datetime.now(UTC), self.version)
            for path in paths:
                if path not in self.read:
                    frame = inference.read_files(self.fs, [path], None)
                    self.profile.add(frame[frame["time"] >= self.since])
                    self.read.add(path)
            return self.profile.psi()
