"""Read a section of params.yaml, the one place where the pipeline's knobs live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = Path("params.yaml")


def load(section: str, path: Path = PARAMS_FILE) -> dict[str, Any]:
    params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if section not in params:
        raise KeyError(f"{path} has no '{section}' section; see the README for its keys")
    return params[section]
