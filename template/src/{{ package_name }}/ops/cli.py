"""The lifecycle commands: `python -m <package>.ops.cli VERB`; nox sessions and CI call these.

package    build a bundle of the current pipeline outputs
retrain    dvc repro, commit and push the results, package, gate, publish, report
deploy     promote a version to a stage, with an approver
rollback   return a stage to the version it served before
audit      verify the whole log and print the history
reproduce  rebuild a version from its commit and data and compare with the record
schema     infer the input contract (schema.py) from a data file, and say why
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from . import commands
from . import settings as project_settings
from .audit import AuditError, Record, Refused
from .bundle import Bundle, BundleError
from .registry import DEFAULT_STAGE, Registry, State
from .science import NoContract
from .settings import Settings


def git_identity(settings: Settings) -> list[str]:
    """CI runners often have no git identity; commits made for them are signed by lab2prod."""
    configured = subprocess.run(
        ["git", "config", "user.email"], cwd=settings.project_dir, capture_output=True, check=False
    )
    return (
        []
        if configured.returncode == 0
        else ["-c", "user.name=lab2prod", "-c", "user.email=lab2prod@localhost"]
    )


def current_actor(given: str | None, settings: Settings) -> str:
    """Who acts: as given, else the CI user, else git's user name, else the login name."""
    for candidate in (given, os.environ.get("GITHUB_ACTOR"), os.environ.get("GITLAB_USER_LOGIN")):
        if candidate:
            return candidate
    configured = subprocess.run(
        ["git", "config", "user.name"],
        cwd=settings.project_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    return configured.stdout.strip() or os.environ.get("USER") or "unknown"


def build_bundle(settings: Settings, allow_dirty: bool) -> tuple[bytes, dict[str, Any]]:
    """A bundle of the current outputs; says which model it serves, and why if not compiled."""
    from . import bundle

    data, manifest = bundle.build(settings, allow_dirty=allow_dirty)
    serving = manifest["serving_model"]
    if "reason" in serving:
        print(
            f"package: the bundle serves the scikit-learn pipeline, which answers and starts "
            f"slower: {serving['reason']}",
            file=sys.stderr,
        )
    else:
        from .compiled import agreement

        parity = serving["parity"]
        print(
            f"package: serves {serving['member']} ({serving['runtime']}); "
            f"{agreement(parity)} on {parity['rows']} rows",
            flush=True,
        )
    return data, manifest


def package(args: argparse.Namespace, settings: Settings) -> int:
    from . import bundle

    data, manifest = build_bundle(settings, args.allow_dirty)
    print(bundle.write(settings, data, manifest))
    return 0


def retrain(args: argparse.Namespace, settings: Settings) -> int:
    import pandas as pd
    import yaml

    from . import bundle, gate, report, science

    if not args.allow_dirty and bundle.git(settings, "status", "--porcelain"):
        raise BundleError("commit or stash your changes first: retrain commits its results")
    print("retrain: dvc repro", flush=True)
    commands.run(["dvc", "repro"], settings.project_dir)
    if not args.allow_dirty and bundle.git(settings, "status", "--porcelain"):
        bundle.git(settings, "add", "--all")
        message = "Retrain: pipeline results on the current data"
        bundle.git(settings, *git_identity(settings), "commit", "--quiet", "-m", message)
        print("retrain: committed the new dvc.lock and reports", flush=True)
    commands.run(["dvc", "push", "--quiet"], settings.project_dir)

    data, manifest = build_bundle(settings, args.allow_dirty)
    thresholds = yaml.safe_load((settings.project_dir / "params.yaml").read_text())["gate"]
    contract = science.contract()
    gate.thresholds_for(contract.target.task, thresholds)  # before anything is published
    registry = Registry(settings.registry, settings.model_name)
    state = registry.state()
    serving = state.serving(DEFAULT_STAGE)
    candidate = Bundle.open(data)
    production = Bundle.open(registry.bundle(serving, state)) if serving else None
    comparable = production is not None and gate.comparable(production, candidate)
    holdout = pd.read_parquet(settings.holdout_file)
    result = gate.decide(
        candidate.load_model(),
        production.load_model() if comparable else None,
        serving if comparable else None,
        holdout,
        thresholds,
        contract,
    )
    if production is not None and not comparable:
        result.note = (
            f"The production model (version {serving}) takes other columns or predicts another "
            "target, so it could not be scored on this holdout; the candidate was judged alone."
        )
        print(f"retrain: {result.note}", flush=True)
    record = registry.publish(data, manifest, result.summary(), current_actor(args.actor, settings))
    version = record.details["version"]
    page = report.write(result, version, manifest, settings.reports_dir)
    print(report.verdict(result, version))
    print(f"report: {page}")
    return 0 if result.passed else 1


def deploy(args: argparse.Namespace, settings: Settings) -> int:
    registry = Registry(settings.registry, settings.model_name)
    record = registry.promote(args.version, args.stage, args.approved_by, args.reason)
    details = record.details
    print(
        f"version {details['version']} now serves in {details['stage']} "
        f"(approved by {record.actor}; was {details['from_version'] or 'empty'})"
    )
    return 0


def rollback(args: argparse.Namespace, settings: Settings) -> int:
    registry = Registry(settings.registry, settings.model_name)
    record = registry.rollback(args.stage, args.approved_by, args.reason)
    details = record.details
    print(
        f"{details['stage']} rolled back from version {details['from_version']} to "
        f"{details['to_version']} (approved by {record.actor})"
    )
    return 0


def history_row(record: Record, state: State) -> list[str]:
    details = record.details
    version = details.get("version") or details.get("to_version")
    published = state.versions.get(version, {})
    manifest = published.get("manifest", {})
    gate = published.get("gate", {})
    data = ",".join(md5[:8] for md5 in manifest.get("data_hashes", {}).values())
    metric = f"{gate['metric']}={gate['candidate']:.4f}" if gate else ""
    return [
        str(record.sequence),
        str(version or ""),
        record.action,
        details.get("stage") or "",
        record.actor,
        record.timestamp[:19],
        manifest.get("git_commit", "")[:10],
        data,
        metric,
    ]


def audit(args: argparse.Namespace, settings: Settings) -> int:
    registry = Registry(settings.registry, settings.model_name)
    records, state = registry.verify()
    header = ["#", "version", "action", "stage", "who", "when (UTC)", "commit", "data", "metric"]
    rows = [header, *(history_row(record, state) for record in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    serving = ", ".join(f"{stage}: version {state.serving(stage)}" for stage in state.history)
    print(
        f"\naudit log verified: {len(records)} records, {len(state.versions)} versions"
        f"{'; ' + serving if serving else ''}"
    )
    return 0


def reproduce(args: argparse.Namespace, settings: Settings) -> int:
    from .reproduce import rebuild

    registry = Registry(settings.registry, settings.model_name)
    outcome = rebuild(settings, Bundle.open(registry.bundle(args.version)))
    registry.record(
        "reproduced", current_actor(args.actor, settings), {"version": args.version, **outcome}
    )
    verdict = "matches" if outcome["matched"] else "does NOT match"
    print(
        f"version {args.version} rebuilt from commit {outcome['git_commit'][:12]}: {verdict} "
        f"the registry (model md5 {outcome['model_md5_rebuilt']}, recorded "
        f"{outcome['model_md5_recorded']}; holdout predictions "
        f"{'identical' if outcome['holdout_predictions_match'] else 'different'})"
    )
    return 0 if outcome["matched"] else 1


def serve(args: argparse.Namespace, settings: Settings) -> int:
    from . import serve
    from .models import NoVersion, serving_version

    if not args.bundle:
        # Fail here, with advice, rather than in every worker.
        try:
            registry = Registry(settings.registry, settings.model_name)
            registry.bundle(serving_version(registry, args.stage))
        except NoVersion as error:
            raise Refused(str(error)) from None
    serve.run(args, stage=args.stage, bundle=args.bundle, poll_seconds=args.poll_seconds)
    return 0


def score(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from . import batch
    from .audit import sha256
    from .models import NoVersion, load, load_stage

    source, target = Path(args.input), Path(args.output)
    rejects = target.with_name(f"{target.stem}.rejects.csv")
    registry = Registry(settings.registry, settings.model_name)
    try:
        model = (
            load(Path(args.bundle).read_bytes(), None)
            if args.bundle
            else load_stage(registry, args.stage)
        )
    except NoVersion as error:
        raise Refused(str(error)) from None
    try:
        counts = batch.score(model, source, target, rejects, args.chunk_rows)
    except (batch.BatchError, FileNotFoundError) as error:
        raise Refused(str(error)) from None
    details = {
        "version": model.version,
        "stage": None if args.bundle else args.stage,
        "bundle_sha256": sha256(Path(args.bundle).read_bytes()) if args.bundle else None,
        "input": str(source),
        "input_sha256": batch.sha256_of(source),
        "output": str(target),
        "output_sha256": batch.sha256_of(target),
        "rejects_sha256": batch.sha256_of(rejects),
        "rows_in": counts.rows_in,
        "rows_scored": counts.rows_scored,
        "rows_rejected": counts.rows_rejected,
    }
    registry.record("scored", current_actor(args.actor, settings), details)
    print(
        f"scored {counts.rows_scored} of {counts.rows_in} rows with version {model.version} "
        f"into {target}; {counts.rows_rejected} rejected into {rejects}"
    )
    return 0


def schema(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ..contract import Task
    from . import infer, science

    data = Path(args.data)
    try:
        inferred = infer.infer(
            infer.read(data),
            args.target,
            task=Task(args.task) if args.task else None,
            positive=args.positive,
            margin=args.margin,
        )
    except FileNotFoundError:
        raise Refused(f"no file {data}") from None
    except infer.InferenceError as error:
        raise Refused(f"{data}: {error}") from None
    print("\n".join(f"  {reason}" for reason in inferred.reasons))
    try:
        changes = infer.differences(science.contract(), inferred.contract)
        print("changes from the contract in schema.py:")
        print("\n".join(f"  {change}" for change in changes) or "  none")
    except NoContract:
        pass
    path = settings.project_dir / "src" / settings.package / "schema.py"
    shown = data.resolve().relative_to(settings.project_dir) if data.resolve().is_relative_to(
        settings.project_dir
    ) else data  # fmt: skip
    infer.write(path, infer.source(inferred.contract, shown.as_posix()))
    print(f"wrote {path.relative_to(settings.project_dir)}: review it, then `nox -s repro`")
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="ops", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    verbs = main.add_subparsers(dest="verb", required=True)

    def verb(name: str, handler: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    for name, handler, text in (
        ("package", package, "build a bundle of the current pipeline outputs"),
        ("retrain", retrain, "repro, commit, push, package, gate, publish and report"),
    ):
        sub = verb(name, handler, text)
        sub.add_argument(
            "--allow-dirty",
            action="store_true",
            help="build from uncommitted changes; such a bundle is never promotable",
        )
        sub.add_argument("--actor", help="who publishes (default: the CI user or $USER)")

    sub = verb("deploy", deploy, "promote a version to a stage")
    sub.add_argument("--version", type=int, help="default: the newest version that passed the gate")
    sub.add_argument("--stage", default=DEFAULT_STAGE)
    sub.add_argument("--approved-by", required=True, help="the person who approved it")
    sub.add_argument("--reason", default="")

    sub = verb("rollback", rollback, "return a stage to the version it served before")
    sub.add_argument("--stage", default=DEFAULT_STAGE)
    sub.add_argument("--approved-by", required=True, help="the person who approved it")
    sub.add_argument("--reason", required=True)

    verb("audit", audit, "verify the audit log and print the history")

    sub = verb("serve", serve, "serve a registry stage (or a bundle file) over HTTP")
    sub.add_argument("--stage", default=DEFAULT_STAGE)
    sub.add_argument("--bundle", help="serve this bundle file instead of a registry stage")
    project_settings.add_server_options(sub)
    sub.add_argument(
        "--poll-seconds",
        type=float,
        default=2.0,
        help="how often to check the registry for a new version",
    )

    sub = verb("score", score, "score a CSV or Parquet file with the version a stage serves")
    sub.add_argument("input")
    sub.add_argument("output", help="same format as the input; rejects go beside it")
    sub.add_argument("--stage", default=DEFAULT_STAGE)
    sub.add_argument("--bundle", help="score with this bundle file instead of a registry stage")
    sub.add_argument("--chunk-rows", type=int, default=100_000)
    sub.add_argument("--actor")

    sub = verb("schema", schema, "infer the input contract from a CSV or Parquet file")
    sub.add_argument("data", help="a CSV or Parquet file of the data, target included")
    sub.add_argument("--target", required=True, help="the column the model predicts")
    sub.add_argument("--task", choices=["binary", "multiclass", "regression"],
                     help="default: inferred from the target's values")  # fmt: skip
    sub.add_argument("--positive", help="binary: the class to flag (default: 1, true or rarer)")
    sub.add_argument("--margin", type=float, default=0.5,
                     help="ranges are widened by this share of their observed span")  # fmt: skip

    sub = verb("reproduce", reproduce, "rebuild a version and compare it with the record")
    sub.add_argument("--version", type=int, required=True)
    sub.add_argument("--actor")
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args, project_settings.load())
    except (Refused, BundleError, commands.CommandError, NoContract) as error:
        print(f"{args.verb}: refused: {error}", file=sys.stderr)
    except AuditError as error:
        print(f"{args.verb}: the audit log is broken: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
