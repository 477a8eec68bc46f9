"""Rebuild a published version from its recorded commit and data, and compare with the record.

The rebuild runs in a scratch git worktree at the bundle's commit, with the bundle's dvc.lock,
its own environment synced from that commit's lock, and the data pulled from the DVC remote by
hash, then packaged there by that commit's own code. The result matches when every model member
(the pipeline and its compiled form) and the holdout predictions are byte-identical to the ones
in the bundle.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from . import commands
from .audit import sha256
from .bundle import PREDICTIONS_MEMBER, Bundle
from .settings import Settings

MODEL_DIR = "model/"


def run(command: list[str], cwd: Path) -> str:
    """Run in the worktree with its own environment, not the one this process runs in."""
    # The commit's code and its locked third-party packages run here: no signing key reaches them.
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "VIRTUAL_ENV" and not (key.startswith("LAB2PROD_") and key.endswith("_KEY"))
    }
    return commands.run(command, cwd, env)


def rebuild(settings: Settings, bundle: Bundle) -> dict[str, Any]:
    """Retrain the bundle's commit in a scratch worktree; say what matched."""
    manifest = bundle.manifest
    model_path = settings.model_file.relative_to(settings.project_dir)
    predictions_path = (settings.reports_dir / "predictions.csv").relative_to(settings.project_dir)
    with tempfile.TemporaryDirectory(prefix="reproduce-") as scratch:
        worktree = Path(scratch) / "worktree"
        run(
            ["git", "worktree", "add", "--detach", str(worktree), manifest["git_commit"]],
            cwd=settings.project_dir,
        )
        try:
            (worktree / "dvc.lock").write_bytes(bundle.members["dvc.lock"])
            run(["uv", "sync", "--locked", "--quiet"], cwd=worktree)
            run(["uv", "run", "--no-sync", "dvc", "pull", "--quiet"], cwd=worktree)
            run(["uv", "run", "--no-sync", "dvc", "repro", "--force", "--quiet"], cwd=worktree)
            model_md5 = hashlib.md5((worktree / model_path).read_bytes()).hexdigest()
            predictions = (worktree / predictions_path).read_bytes()
            # The commit's own packaging compiles the model as it did then.
            package = ["uv", "run", "--no-sync", "python", "-m", f"{settings.package}.ops.cli",
                       "package"]  # fmt: skip
            built = run([*package, "--allow-dirty"], cwd=worktree).strip().splitlines()[-1]
            rebuilt = Bundle.open((worktree / built).read_bytes())
        finally:
            run(["git", "worktree", "remove", "--force", str(worktree)], cwd=settings.project_dir)
    predictions_match = sha256(predictions) == manifest["members"][PREDICTIONS_MEMBER]
    recorded = manifest["members"]
    members = {
        name: rebuilt.manifest["members"].get(name) == digest
        for name, digest in recorded.items()
        if name.startswith(MODEL_DIR)
    }
    matched = model_md5 == manifest["model_md5"] and predictions_match and all(members.values())
    return {
        "matched": matched,
        "git_commit": manifest["git_commit"],
        "model_md5_recorded": manifest["model_md5"],
        "model_md5_rebuilt": model_md5,
        "holdout_predictions_match": predictions_match,
        "model_members_match": members,
    }
