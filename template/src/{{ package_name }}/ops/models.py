"""A verified model from a bundle, as the service and batch scoring use it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .. import schema
from .bundle import Bundle
from .registry import Registry


class NoVersion(Exception):
    """The stage serves nothing yet."""


# Built once: a DataFrame made with a ready Index costs microseconds, with a list of names far more.
COLUMNS = pd.Index(schema.FEATURE_NAMES)


@dataclass(frozen=True)
class Loaded:
    """A model whose bundle was checked, the version it is, and what it was built from."""

    version: int | None
    model: Any
    manifest: dict[str, Any]

    def score(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(predicted labels, probability of the positive class) for rows in schema order."""
        probabilities = self.model.predict_proba(pd.DataFrame(rows, columns=COLUMNS))
        return self.model.classes_[probabilities.argmax(axis=1)], probabilities[:, 1]


def load(data: bytes, version: int | None) -> Loaded:
    bundle = Bundle.open(data)
    loaded = Loaded(version=version, model=bundle.load_model(), manifest=bundle.manifest)
    # The first prediction pays for lazy imports and caches; do it before real traffic.
    loaded.score(np.array([[feature.minimum for feature in schema.FEATURES]]))
    return loaded


def serving_version(registry: Registry, stage: str) -> int:
    version = registry.state().serving(stage)
    if version is None:
        raise NoVersion(
            f"no version serves in {stage}: run `nox -s retrain`, then "
            f"`nox -s deploy -- --approved-by NAME --stage {stage}`"
        )
    return version


def load_stage(registry: Registry, stage: str) -> Loaded:
    """The version a stage serves, its bundle checked against the registry's sha256."""
    version = serving_version(registry, stage)
    return load(registry.bundle(version), version)
