"""The bundle: one immutable zip with everything needed to serve, audit and rebuild a model.

Members: the trained pipeline (and, when it compiles and answers the same, its ONNX form, which
serving uses), the package code, the input schema (JSON), the environment lock,
dvc.lock, params, metrics, holdout predictions and `manifest.json`, which records where it all
came from (git commit, clean or dirty, data and model hashes, lock sha256, Python version) and the
sha256 of every other member.
"""

from __future__ import annotations

import io
import json
import platform
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from . import commands, science
from .audit import sha256
from .settings import LOCK_FILES, Settings

PROJECT_FILES = ("pyproject.toml", "environment.yml", "dvc.lock", "params.yaml", *LOCK_FILES)
MODEL_MEMBER = "model/model.joblib"
SCHEMA_MEMBER = "schema.json"
PREDICTIONS_MEMBER = "reports/predictions.csv"
# `python BUNDLE.zip` runs this member: the bundle serves itself, with the code inside it.
MAIN_MEMBER = """\
import os, sys
bundle = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(bundle, "code"))
from {package}.ops.bundled import main
sys.exit(main(bundle, sys.argv[1:]))
"""
# Fixed member times, so the zip's bytes depend on its content only.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class BundleError(Exception):
    """The bundle cannot be built or trusted; the message says what to do."""


def git(settings: Settings, *arguments: str) -> str:
    return commands.run(["git", *arguments], settings.project_dir).strip()


def stale_stages(settings: Settings) -> dict[str, Any]:
    return json.loads(commands.run(["dvc", "status", "--json"], settings.project_dir) or "{}")


def stage_hashes(dvc_lock: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(inputs, outputs) recorded in dvc.lock: path -> md5. Inputs exclude stage outputs."""
    deps, outs = {}, {}
    for stage in dvc_lock.get("stages", {}).values():
        deps.update({entry["path"]: entry["md5"] for entry in stage.get("deps", [])})
        outs.update({entry["path"]: entry["md5"] for entry in stage.get("outs", [])})

    def produced(path: str) -> bool:
        return any(path == out or path.startswith(f"{out}/") for out in outs)

    return {path: md5 for path, md5 in deps.items() if not produced(path)}, outs


def build(settings: Settings, *, allow_dirty: bool = False) -> tuple[bytes, dict[str, Any]]:
    """The bundle's bytes and its manifest, for the pipeline outputs now in the project."""
    stale = stale_stages(settings)
    if stale:
        raise BundleError(
            f"the pipeline is out of date ({', '.join(stale)}): run `nox -s repro` "
            "(or `nox -s retrain`) and commit dvc.lock first"
        )
    dirty = bool(git(settings, "status", "--porcelain"))
    if dirty and not allow_dirty:
        raise BundleError(
            "the git tree has uncommitted changes, so this bundle could not be rebuilt: commit "
            "them, or pass --allow-dirty for a bundle that can never be promoted"
        )

    from .. import tasks

    root = settings.project_dir
    contract = science.contract()
    members: dict[str, bytes] = {MODEL_MEMBER: settings.model_file.read_bytes()}
    predictions = settings.reports_dir / "predictions.csv"
    members[PREDICTIONS_MEMBER] = predictions.read_bytes()
    members["reports/metrics.json"] = (settings.reports_dir / "metrics.json").read_bytes()
    for name in PROJECT_FILES:
        if (root / name).is_file():
            members[name] = (root / name).read_bytes()
    package_dir = root / "src" / settings.package
    for path in sorted(package_dir.rglob("*.py")):
        members[f"code/{path.relative_to(root / 'src').as_posix()}"] = path.read_bytes()
    members[SCHEMA_MEMBER] = json.dumps(contract.to_json(), indent=2, default=str).encode()
    members["__main__.py"] = MAIN_MEMBER.format(package=settings.package).encode()
    quality = settings.reports_dir / "prepare.json"
    if quality.is_file():
        members["reports/prepare.json"] = quality.read_bytes()
    pipeline = load_pipeline(members[MODEL_MEMBER])
    try:
        tasks.check_estimator(pipeline, contract.target)
    except ValueError as error:
        raise BundleError(f"the trained model does not fit schema.py: {error}") from None
    compiled, serving_model = compile_model(settings, pipeline, contract)
    if compiled is not None:
        members[serving_model["member"]] = compiled

    inputs, outputs = stage_hashes(yaml.safe_load(members["dvc.lock"]))
    lock_name = next(name for name in LOCK_FILES if name in members)
    manifest = {
        "model_name": settings.model_name,
        "git_commit": git(settings, "rev-parse", "HEAD"),
        "dirty": dirty,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python_version": platform.python_version(),
        # The pipeline's source data: what it reads and no stage writes (code aside).
        "data_hashes": {
            path: md5 for path, md5 in inputs.items() if not path.startswith(("src/", "tests/"))
        },
        "model_md5": outputs[settings.model_file.relative_to(root).as_posix()],
        "params": yaml.safe_load(members["params.yaml"]),
        "metrics": json.loads(members["reports/metrics.json"]),
        "data_quality": json.loads(members.get("reports/prepare.json", b"{}")),
        "task": str(contract.target.task),
        "positive_class": contract.target.positive,
        # The order of the probability columns the model answers with.
        "classes": getattr(pipeline, "classes_", np.array([])).tolist(),
        "lock_file": lock_name,
        "lock_sha256": sha256(members[lock_name]),
        "serving_model": serving_model,
        "members": {name: sha256(data) for name, data in sorted(members.items())},
    }
    members["manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True).encode()

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(members):
            archive.writestr(zipfile.ZipInfo(name, ZIP_TIME), members[name])
    return buffer.getvalue(), manifest


def load_pipeline(data: bytes) -> Any:
    import joblib  # heavy: only the commands that need the model pay for it

    return joblib.load(io.BytesIO(data))


def compile_model(
    settings: Settings, pipeline: Any, contract: Any
) -> tuple[bytes | None, dict[str, Any]]:
    import pandas as pd

    from .compiled import compile_pipeline

    return compile_pipeline(pipeline, contract, pd.read_parquet(settings.holdout_file))


@dataclass(frozen=True)
class Bundle:
    """An opened bundle whose members have been checked against its manifest."""

    manifest: dict[str, Any]
    members: dict[str, bytes]

    @classmethod
    def open(cls, data: bytes) -> Bundle:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                members = {name: archive.read(name) for name in archive.namelist()}
            manifest = json.loads(members.pop("manifest.json"))
        except (zipfile.BadZipFile, KeyError, ValueError) as error:
            raise BundleError(f"not a lab2prod bundle: {error}") from None
        if manifest["members"] != {name: sha256(body) for name, body in sorted(members.items())}:
            raise BundleError("a bundle member does not match the manifest's sha256")
        return cls(manifest=manifest, members=members)

    def load_model(self) -> Any:
        return load_pipeline(self.members[MODEL_MEMBER])


def write(settings: Settings, data: bytes, manifest: dict[str, Any]) -> Path:
    """Save a built bundle under build/bundles/, named by model, commit and hash."""
    suffix = "-dirty" if manifest["dirty"] else ""
    name = f"{settings.model_name}-{manifest['git_commit'][:12]}{suffix}-{sha256(data)[:12]}.zip"
    path = settings.project_dir / "build" / "bundles" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
