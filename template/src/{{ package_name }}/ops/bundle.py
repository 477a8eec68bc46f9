"""The bundle: one immutable zip with everything needed to serve, audit and rebuild a model.

Members: the trained pipeline (and, when it compiles and answers the same, its ONNX form, which
serving uses), the package code as git tracks it (never an ignored or untracked file), the input
schema (JSON), the environment lock, dvc.lock, params, metrics, holdout predictions, the
training data's profile for drift (`reference.json`, see drift.py) and `manifest.json`, which
records where it all came from (git commit, clean or dirty, data and model hashes, lock sha256,
Python version) and the sha256 of every other member. `manifest.sig` is the publish key's
signature of the manifest, so a bundle file proves who built it. The manifest's `sql` entry says
whether the model also scores inside a database, proven (sql.py).
"""

from __future__ import annotations

import io
import json
import logging
import platform
import sys
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import yaml

from . import commands, science, storage
from .audit import sha256
from .settings import LOCK_FILES, Settings
from .signing import Signer, Trust, Untrusted

PROJECT_FILES = ("pyproject.toml", "environment.yml", "dvc.lock", "params.yaml", *LOCK_FILES)
MODEL_MEMBER = "model/model.joblib"
SCHEMA_MEMBER = "schema.json"
MANIFEST_MEMBER = "manifest.json"
SIGNATURE_MEMBER = "manifest.sig"
PREDICTIONS_MEMBER = "reports/predictions.csv"
REFERENCE_MEMBER = "reference.json"
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


def build(
    settings: Settings, signer: Signer | None, *, allow_dirty: bool = False
) -> tuple[bytes, dict[str, Any]]:
    """The bundle's bytes and its manifest, for the pipeline outputs now in the project, signed
    by `signer` (an unsigned bundle can only be served with --trust-unsigned)."""
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
    from . import card, explain, sql  # sklearn: only package pays for them

    root = settings.project_dir
    contract = science.contract()
    members: dict[str, bytes] = {MODEL_MEMBER: settings.model_file.read_bytes()}
    predictions = settings.reports_dir / "predictions.csv"
    members[PREDICTIONS_MEMBER] = predictions.read_bytes()
    members["reports/metrics.json"] = (settings.reports_dir / "metrics.json").read_bytes()
    for name in PROJECT_FILES:
        if (root / name).is_file():
            members[name] = (root / name).read_bytes()
    tracked = git(settings, "ls-files", "-z", "--", f"src/{settings.package}").split("\0")
    for name in sorted(name for name in tracked if name.endswith(".py")):
        if (root / name).is_file():  # a tracked file deleted in the work tree is not code
            members[f"code/{name.removeprefix('src/')}"] = (root / name).read_bytes()
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
    import pandas as pd  # heavy: only package pays for it

    # The rows the model learnt from and was judged on; drift, explanations and the card start
    # from them.
    training = pd.read_parquet(settings.train_file)
    holdout = pd.read_parquet(settings.holdout_file)
    sql_proof = sql.start_proof(pipeline, contract, holdout)
    members.update(explain.baseline(pipeline, contract, training))
    members[REFERENCE_MEMBER] = profile(contract, training, members[PREDICTIONS_MEMBER])
    compiled, serving_model = compile_model(pipeline, contract, holdout)
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
        # Whether the model scores in SQL as it does here: proven in DuckDB, or why not.
        "sql": sql.finish_proof(sql_proof),
    }
    # The card describes what the manifest records, and is itself a member the manifest lists.
    described = card.build(settings, pipeline, contract, training, holdout, manifest)
    members[card.CARD_MEMBER] = json.dumps(
        described, indent=2, sort_keys=True, default=str
    ).encode()
    members[card.CARD_PAGE_MEMBER] = card.page(json.loads(members[card.CARD_MEMBER])).encode()
    manifest["members"] = {name: sha256(data) for name, data in sorted(members.items())}
    members[MANIFEST_MEMBER] = json.dumps(manifest, indent=2, sort_keys=True).encode()
    if signer is not None:
        signature = signer.sign(members[MANIFEST_MEMBER])
        members[SIGNATURE_MEMBER] = json.dumps(signature).encode()

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(members):
            archive.writestr(zipfile.ZipInfo(name, ZIP_TIME), members[name])
    return buffer.getvalue(), manifest


def load_pipeline(data: bytes) -> Any:
    import joblib  # heavy: only the commands that need the model pay for it

    return joblib.load(io.BytesIO(data))


def profile(contract: Any, training: Any, predictions: bytes) -> bytes:
    """reference.json: the training data's and the holdout predictions' profile, for drift."""
    import pandas as pd

    from . import drift

    predicted = pd.read_csv(io.BytesIO(predictions), dtype={"predicted": str})["predicted"]
    if not contract.target.task.is_classification:
        predicted = predicted.astype("float64")
    document = drift.reference(contract, training, predicted)
    return json.dumps(document, indent=2, sort_keys=True).encode()


def compile_model(
    pipeline: Any, contract: Any, holdout: Any
) -> tuple[bytes | None, dict[str, Any]]:
    from .compiled import compile_pipeline

    return compile_pipeline(pipeline, contract, holdout)


@dataclass(frozen=True)
class Bundle:
    """An opened bundle whose members have been checked against its manifest.

    Whether its manifest may be believed is the caller's to settle first: a registry bundle's
    bytes match the sha256 in a signed `published` record; a bundle file needs `verified`.
    """

    manifest: dict[str, Any]
    members: dict[str, bytes]
    manifest_bytes: bytes
    signature: Any

    @classmethod
    def open(cls, data: bytes) -> Bundle:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                members = {name: archive.read(name) for name in archive.namelist()}
            manifest_bytes = members.pop(MANIFEST_MEMBER)
            manifest = json.loads(manifest_bytes)
            signature = json.loads(members.pop(SIGNATURE_MEMBER, b"null"))
            listed = manifest["members"]
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as error:
            raise BundleError(f"not a lab2prod bundle: {error}") from None
        actual = {name: sha256(body) for name, body in sorted(members.items())}
        if listed != actual:
            changed = sorted(set(listed.items()) ^ set(actual.items()))
            raise BundleError(
                f"bundle member {changed[0][0]} does not match the manifest's sha256"
                if changed
                else "the bundle's members do not match its manifest"
            )
        return cls(manifest, members, manifest_bytes, signature)

    def load_model(self) -> Any:
        return load_pipeline(self.members[MODEL_MEMBER])

    def reference(self) -> dict[str, Any] | None:
        """The training data's profile for drift; None in a bundle made before profiles."""
        return json.loads(self.members.get(REFERENCE_MEMBER, b"null"))


def verified(data: bytes, trust: Trust, *, trust_unsigned: bool = False) -> Bundle:
    """A bundle file, opened only once an active publish key's signature of its manifest, and
    every member's sha256, verify; --trust-unsigned skips the signature, loudly."""
    bundle = Bundle.open(data)
    if trust_unsigned:
        logging.getLogger(__name__).warning(
            "--trust-unsigned: the bundle's signature is NOT checked; its pickled pipeline may run "
            "any code. Use only for local experiments."
        )
        return bundle
    try:
        trust.check_manifest(bundle.manifest_bytes, bundle.signature, retired_ok=False)
    except Untrusted as error:
        raise BundleError(
            f"the bundle {error}: it was not built by a publish key this project trusts "
            "(--trust-unsigned serves it anyway, for local experiments only)"
        ) from None
    return bundle


def write(settings: Settings, data: bytes, manifest: dict[str, Any]) -> Path:
    """Save a built bundle under build/bundles/, named by model, commit and hash; a temporary
    name and one rename, so a killed `package` never leaves a truncated bundle there."""
    suffix = "-dirty" if manifest["dirty"] else ""
    name = f"{settings.model_name}-{manifest['git_commit'][:12]}{suffix}-{sha256(data)[:12]}.zip"
    path = settings.project_dir / "build" / "bundles" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in storage.remove_leftovers(path.parent):
        print(f"package: removed {leftover.name}, left by a killed run", file=sys.stderr)
    storage.put(fsspec.filesystem("file"), str(path), data)
    return path
