"""Where the registry lives and what the model is called: `[tool.lab2prod]` in pyproject.toml.

`LAB2PROD_REGISTRY` overrides the registry location, so CI or a laptop can point the same
project at another store without an edit. `inference-log` (on by default) says whether the
service and batch scoring record what they score, `inference-log-exclude` which input columns
they leave out (personal data), `inference-log-flush-seconds` how often the service writes it;
`LAB2PROD_INFERENCE_LOG=off` turns the log off where the data
may not be kept, whatever the project says.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The environment lock, whichever manager the project uses.
LOCK_FILES = ("uv.lock", "conda-lock.yml")


@dataclass(frozen=True)
class Settings:
    project_dir: Path
    package: str
    model_name: str
    registry: str
    model_file: Path  # the trained pipeline, an output of dvc.yaml's train stage
    holdout_file: Path  # the rows every candidate and the production model are compared on
    train_file: Path  # the rows the model learned from: the reference drift is measured against
    reports_dir: Path
    inference_log: bool = True
    inference_log_exclude: tuple[str, ...] = ()
    inference_log_flush_seconds: float = 2.0  # at most what a crash loses


def load(project_dir: Path | None = None) -> Settings:
    project_dir = (project_dir or Path.cwd()).resolve()
    pyproject = tomllib.loads((project_dir / "pyproject.toml").read_text(encoding="utf-8"))
    ours = pyproject.get("tool", {}).get("lab2prod", {})
    package = __package__.split(".")[0]
    registry = os.environ.get("LAB2PROD_REGISTRY") or ours.get("registry")
    if not registry:
        raise SystemExit("no registry configured: set [tool.lab2prod] registry in pyproject.toml")
    if "://" not in registry and not Path(registry).is_absolute():
        registry = str((project_dir / registry).resolve())
    return Settings(
        project_dir=project_dir,
        package=package,
        model_name=ours.get("model-name", package),
        registry=registry,
        model_file=project_dir / ours.get("model-file", "models/model.joblib"),
        holdout_file=project_dir / ours.get("holdout-file", "data/prepared/holdout.parquet"),
        train_file=project_dir / ours.get("train-file", "data/prepared/train.parquet"),
        reports_dir=project_dir / ours.get("reports-dir", "reports"),
        inference_log=inference_log(ours.get("inference-log", True)),
        inference_log_exclude=excluded_columns(ours.get("inference-log-exclude", [])),
        inference_log_flush_seconds=flush_seconds(ours.get("inference-log-flush-seconds", 2.0)),
    )


def refused(message: str) -> Exception:
    # Imported here: `audit` needs fsspec, and bundled.py imports this module with only the
    # standard library installed.
    from .audit import Refused

    return Refused(message)


SWITCH = {"on": True, "true": True, "1": True, "yes": True,
          "off": False, "false": False, "0": False, "no": False}  # fmt: skip


def inference_log(configured: Any) -> bool:
    """Whether to keep the inference log: LAB2PROD_INFERENCE_LOG, else the project's setting."""
    variable = os.environ.get("LAB2PROD_INFERENCE_LOG", "").strip().lower()
    if variable:
        if variable not in SWITCH:
            raise refused(f"LAB2PROD_INFERENCE_LOG must be on or off, not {variable!r}")
        return SWITCH[variable]
    if not isinstance(configured, bool):
        raise refused(f"[tool.lab2prod] inference-log must be true or false, not {configured!r}")
    return configured


def excluded_columns(configured: Any) -> tuple[str, ...]:
    if not isinstance(configured, list) or not all(isinstance(n, str) for n in configured):
        raise refused(
            "[tool.lab2prod] inference-log-exclude must be a list of column names, "
            f"not {configured!r}"
        )
    return tuple(configured)


def flush_seconds(configured: Any) -> float:
    if isinstance(configured, bool) or not isinstance(configured, int | float) or configured <= 0:
        raise refused(
            f"[tool.lab2prod] inference-log-flush-seconds must be a number above 0, not "
            f"{configured!r}"
        )
    return float(configured)


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """Where and how the service listens; each defaults to a LAB2PROD_* variable, then a safe
    value (loopback only, one worker, slow clients cut off).

    Defaults are text, which argparse converts as it does what is typed: a bad variable gets
    argparse's one-line error rather than a traceback.
    """
    environ = os.environ.get
    parser.add_argument("--host", default=environ("LAB2PROD_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=environ("LAB2PROD_PORT", "8000"))
    parser.add_argument("--workers", type=int, default=environ("LAB2PROD_WORKERS", "1"))

    def limit(name: str, kind: type, default: str, meaning: str) -> None:
        variable = "LAB2PROD_" + name.upper().replace("-", "_")

        def above_zero(text: str) -> Any:
            value = kind(text)
            if not value > 0:
                raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
            return value

        above_zero.__name__ = kind.__name__  # argparse names it in "invalid float value: 'x'"
        parser.add_argument(
            f"--{name}",
            type=above_zero,
            default=environ(variable, default),
            help=f"{meaning} (default {default}, or ${variable})",
        )

    limit("header-timeout", float, "10", "seconds a connection has to send a request's headers")
    limit("body-timeout", float, "30", "seconds a request body may stall before a 408")
    limit("max-connections", int, "1000", "open connections per worker beyond which 503 answers")
    parser.add_argument(
        "--allow-no-token",
        action="store_true",
        default=environ("LAB2PROD_ALLOW_NO_TOKEN", "").lower() in {"1", "true", "yes"},
        help="serve beyond loopback without LAB2PROD_TOKEN (behind a proxy that authenticates)",
    )
