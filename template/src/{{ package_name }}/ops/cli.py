"""The lifecycle commands: `python -m <package>.ops.cli VERB`; nox sessions and CI call these.

package    build a bundle of the current pipeline outputs
retrain    dvc repro, commit and push the results, package, gate, publish, report
deploy     promote a version to a stage, with an approver
rollback   return a stage to the version it served before
audit      verify the whole log (hashes, signatures, anchored heads) and print the history
reproduce  rebuild a version from its commit and data and compare with the record
dashboard  write the model's dashboard: one self-contained HTML page for people
monitor    drift, live performance, volumes and job durations of the serving versions
schema     infer the input contract (schema.py) from a data file, and say why
keys       list the trusted signing keys; make, rotate or retire one
gc         remove what no recorded version needs (a dry run unless --apply)
feedback   attach actual outcomes to logged predictions, by request id or a key column
sql        one SQL query that scores a table inside the database with a version's model
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import commands, signing
from . import settings as project_settings
from .anchor import HEAD_FILE, Head
from .audit import AuditError, Record, Refused
from .bundle import Bundle, BundleError
from .notify import notify
from .registry import DEFAULT_STAGE, Registry, State, open_registry
from .science import NoContract
from .settings import Settings
from .signing import Untrusted
from .sql import DIALECTS


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


def build_bundle(
    settings: Settings, signer: signing.Signer | None, allow_dirty: bool
) -> tuple[bytes, dict[str, Any]]:
    """A bundle of the current outputs; says which model it serves, and why if not compiled."""
    from . import bundle

    data, manifest = bundle.build(settings, signer, allow_dirty=allow_dirty)
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
    from .sql import summary

    print(f"package: scores in SQL: {summary(manifest['sql'])}", flush=True)
    return data, manifest


def package(args: argparse.Namespace, settings: Settings) -> int:
    from . import bundle

    signer = signing.private_key("publish", settings.project_dir)
    if signer is None:
        print(
            "package: no publish key here, so the bundle is unsigned and can only be served with "
            "--trust-unsigned; `nox -s keys -- new --role publish` makes one",
            file=sys.stderr,
        )
    data, manifest = build_bundle(settings, signer, args.allow_dirty)
    print(bundle.write(settings, data, manifest))
    return 0


def anchor_head(registry: Registry, record: Record, settings: Settings, what: str) -> None:
    """Commit the new head to trust/head.json, so cutting the log later shows."""
    message = f"Registry head: record {record.sequence}, {what}"
    print(f"{record.action}: {registry.anchors.commit(record, message, git_identity(settings))}")


def unfinished_retrain(settings: Settings, changed: list[str]) -> bool:
    """Whether the uncommitted changes are only what a retrain writes: a killed retrain's."""
    reports = settings.reports_dir.relative_to(settings.project_dir).as_posix()
    written = {"dvc.lock", HEAD_FILE.as_posix()}
    return all(path in written or path.startswith(f"{reports}/") for path in changed)


def changed_paths(settings: Settings) -> list[str]:
    from . import bundle

    lines = bundle.git(settings, "status", "--porcelain", "--untracked-files=all").splitlines()
    return [line[3:] for line in lines if line.strip()]


def retrain(args: argparse.Namespace, settings: Settings) -> int:
    import pandas as pd
    import yaml

    from . import bundle, gate, report, science

    registry = open_registry(settings)
    # Before hours of training: can this machine publish at all?
    signer = signing.signer_for("published", settings.project_dir, registry.log.trust)
    changed = changed_paths(settings)
    if changed and not args.allow_dirty:
        if not unfinished_retrain(settings, changed):
            raise BundleError("commit or stash your changes first: retrain commits its results")
        if not args.resume:
            raise BundleError(
                f"found the uncommitted results of a retrain that was stopped ({', '.join(changed)}"
                "): `nox -s retrain -- --resume` finishes it (repro, commit, publish); "
                f"`git checkout -- {' '.join(changed)}` and `dvc checkout` discard them"
            )
        print(f"retrain: resuming with {', '.join(changed)}", flush=True)
    print("retrain: dvc repro", flush=True)
    stage_seconds = commands.stage_seconds(["dvc", "repro"], settings.project_dir)
    if not args.allow_dirty and bundle.git(settings, "status", "--porcelain"):
        bundle.git(settings, "add", "--all")
        message = "Retrain: pipeline results on the current data"
        bundle.git(settings, *git_identity(settings), "commit", "--quiet", "-m", message)
        print("retrain: committed the new dvc.lock and reports", flush=True)
    commands.run(["dvc", "push", "--quiet"], settings.project_dir)

    data, manifest = build_bundle(settings, signer, args.allow_dirty)
    thresholds = yaml.safe_load((settings.project_dir / "params.yaml").read_text())["gate"]
    contract = science.contract()
    gate.thresholds_for(contract.target.task, thresholds)  # before anything is published
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
    actor = current_actor(args.actor, settings)
    timing = {"duration_seconds": took(args), "stage_seconds": stage_seconds}
    record = registry.publish(data, manifest, result.summary(), actor, signer, timing)
    version = record.details["version"]
    anchor_head(registry, record, settings, f"version {version} published")
    page = report.write(result, version, manifest, settings.reports_dir)
    print(report.verdict(result, version))
    print(f"report: {page}")
    notify(
        settings,
        "retrain",
        f"version {version} {'passed' if result.passed else 'failed'} the deploy gate",
        [report.verdict(result, version), report.gate_sentence(result)],
        {
            **{key: value for key, value in result.candidate.scores.items()},
            "holdout_rows": result.candidate.rows,
            "production_version": result.production_version,
            "published_by": actor,
        },
    )
    return 0 if result.passed else 1


def took(args: argparse.Namespace) -> float:
    """Seconds since the command started: every lifecycle record keeps how long its job took."""
    return round(time.monotonic() - args.started, 3)


def timed(args: argparse.Namespace) -> dict[str, float]:
    return {"duration_seconds": took(args)}


def deploy(args: argparse.Namespace, settings: Settings) -> int:
    registry = open_registry(settings)
    signer = signing.signer_for("promoted", settings.project_dir, registry.log.trust)
    record = registry.promote(
        args.version, args.stage, args.approved_by, signer, args.reason, timed(args)
    )
    details = record.details
    anchor_head(registry, record, settings, f"version {details['version']} to {details['stage']}")
    said = (
        f"version {details['version']} now serves in {details['stage']} "
        f"(approved by {record.actor}; was {details['from_version'] or 'empty'})"
    )
    print(said)
    notify(
        settings,
        "deploy",
        f"version {details['version']} deployed to {details['stage']}",
        [said, *([f"Reason: {details['reason']}"] if details["reason"] else [])],
        {"version": details["version"], "stage": details["stage"],
         "previous_version": details["from_version"], "approved_by": record.actor},
    )  # fmt: skip
    return 0


def rollback(args: argparse.Namespace, settings: Settings) -> int:
    registry = open_registry(settings)
    signer = signing.signer_for("rolled_back", settings.project_dir, registry.log.trust)
    record = registry.rollback(args.stage, args.approved_by, args.reason, signer, timed(args))
    details = record.details
    anchor_head(registry, record, settings, f"{details['stage']} back to {details['to_version']}")
    said = (
        f"{details['stage']} rolled back from version {details['from_version']} to "
        f"{details['to_version']} (approved by {record.actor})"
    )
    print(said)
    notify(
        settings,
        "rollback",
        f"{details['stage']} rolled back to version {details['to_version']}",
        [said, f"Reason: {details['reason']}"],
        {"version": details["to_version"], "stage": details["stage"],
         "previous_version": details["from_version"], "approved_by": record.actor},
    )  # fmt: skip
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
        record.signed_by or "(unsigned)",
    ]


def audit(args: argparse.Namespace, settings: Settings) -> int:
    expected = [Head.expected(text) for text in args.expect_head]
    registry = open_registry(settings, expected)
    records, state = registry.verify()
    if not records:
        if args.allow_empty:
            print(f"audit: the registry at {registry.url} has no records yet (--allow-empty)")
            return 0
        raise AuditError(
            f"no audit records at {registry.log.root}: a mistyped location, a missing bucket or "
            "a deleted log? Check LAB2PROD_REGISTRY and [tool.lab2prod] registry; pass "
            "--allow-empty only for a registry that is new"
        )
    header = [
        "#", "version", "action", "stage", "who", "when (UTC)", "commit", "data", "metric",
        "signed by",
    ]  # fmt: skip
    rows = [header, *(history_row(record, state) for record in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    serving = ", ".join(f"{stage}: version {state.serving(stage)}" for stage in state.history)
    print(f"\nhead: {records[-1].sequence}:{records[-1].sha256}  (for audit --expect-head)")
    print(
        f"audit log verified: {len(records)} records, {len(state.versions)} versions"
        f"{'; ' + serving if serving else ''}"
    )
    return 0


def reproduce(args: argparse.Namespace, settings: Settings) -> int:
    from .reproduce import rebuild

    registry = open_registry(settings)
    signer = signing.signer_for("reproduced", settings.project_dir, registry.log.trust)
    outcome = rebuild(settings, Bundle.open(registry.bundle(args.version)))
    actor = current_actor(args.actor, settings)
    details = {"version": args.version, **outcome, **timed(args)}
    registry.record("reproduced", actor, details, signer)
    verdict = "matches" if outcome["matched"] else "does NOT match"
    print(
        f"version {args.version} rebuilt from commit {outcome['git_commit'][:12]}: {verdict} "
        f"the registry (model md5 {outcome['model_md5_rebuilt']}, recorded "
        f"{outcome['model_md5_recorded']}; holdout predictions "
        f"{'identical' if outcome['holdout_predictions_match'] else 'different'}; "
        + ", ".join(
            f"{name} {'identical' if same else 'DIFFERENT'}"
            for name, same in outcome["model_members_match"].items()
        )
        + ")"
    )
    return 0 if outcome["matched"] else 1


def dashboard(args: argparse.Namespace, settings: Settings) -> int:
    import fsspec

    from . import dashboard, storage

    page = dashboard.build(open_registry(settings)).encode()
    target = Path(args.output or settings.reports_dir / "dashboard.html").resolve()
    storage.put(fsspec.filesystem("file"), str(target), page)
    print(f"dashboard: {target} ({len(page):,} bytes)")
    return 0


def size_text(size: float) -> str:
    """A size as people read it: 812 bytes, 4.2 kB, 31.0 MB."""
    if size < 1000:
        return f"{size:.0f} bytes"
    units = iter(("kB", "MB", "GB", "TB"))
    unit = next(units)
    while (size := size / 1000) >= 1000 and unit != "TB":
        unit = next(units)
    return f"{size:.1f} {unit}"


def gc(args: argparse.Namespace, settings: Settings) -> int:
    from .collect import collect

    registry = open_registry(settings)
    signer = (
        signing.signer_for("collected", settings.project_dir, registry.log.trust)
        if args.apply
        else None
    )
    actor = current_actor(args.actor, settings)
    plan = collect(settings, registry, signer, actor, cloud=args.cloud)
    verb = "removed" if args.apply else "would remove"
    numbers = ", ".join(map(str, sorted(plan.versions))) or "none"
    lines = [
        f"bundles of versions that never served: {numbers} "
        f"({size_text(sum(plan.bundles.values()))})",
        *(
            f"{folder} log: {len(days)} days, {days[0]} to {days[-1]}"
            for folder, days in plan.days.items()
        ),
        f"log days in all: {size_text(sum(plan.day_folders.values()))}",
        f"bundles no record names: {len(plan.orphans)} ({size_text(sum(plan.orphans.values()))})",
        f"leftovers of killed runs: {len(plan.leftovers)} "
        f"({size_text(sum(plan.leftovers.values()))})",
        f"DVC cache objects no recorded version needs: {plan.dvc_objects} "
        f"({size_text(plan.dvc_bytes)})",
    ]
    if args.cloud:
        lines.append(f"DVC remote objects no recorded version needs: {plan.dvc_remote_objects}")
    print(f"gc: {verb}:")
    print("\n".join(f"  {line}" for line in lines))
    print(f"gc: {verb} {size_text(plan.total_bytes)} in all" + (
        "" if args.apply else "; `nox -s gc -- --apply` removes it"
    ))  # fmt: skip
    return 0


def serve(args: argparse.Namespace, settings: Settings) -> int:
    from . import serve
    from .inference import check_excluded
    from .models import NoVersion, contract_of, serving_version

    serve.refuse_an_open_door(args)
    # Fail here, with advice, rather than in every worker.
    if args.bundle:
        served = bundle_file(args, settings)[0]
    else:
        try:
            registry = open_registry(settings)
            served = Bundle.open(registry.bundle(serving_version(registry, args.stage)))
        except NoVersion as error:
            raise Refused(str(error)) from None
    if settings.inference_log:
        check_excluded(contract_of(served), settings.inference_log_exclude)
    os.environ["LAB2PROD_SERVE_PROJECT"] = str(settings.project_dir)  # where workers log
    serve.run(args, stage=args.stage, bundle=args.bundle, poll_seconds=args.poll_seconds)
    return 0


def bundle_file(args: argparse.Namespace, settings: Settings) -> tuple[Bundle, bytes]:
    """The bundle file named by --bundle, verified with the project's keys, and its bytes."""
    from .bundle import verified

    try:
        data = Path(args.bundle).read_bytes()
    except OSError as error:
        raise Refused(f"cannot read the bundle {args.bundle}: {error.strerror}") from None
    trust = signing.project_trust(settings.project_dir)
    return verified(data, trust, trust_unsigned=args.trust_unsigned), data


def score(args: argparse.Namespace, settings: Settings) -> int:
    import uuid

    from . import batch
    from .audit import sha256
    from .inference import InferenceLog, check_excluded
    from .models import NoVersion, load, serving_version

    registry = open_registry(settings)
    signer = signing.signer_for("scored", settings.project_dir, registry.log.trust)
    bundle_sha256 = None
    try:
        if args.bundle:
            opened, data = bundle_file(args, settings)
            model, bundle_sha256 = load(opened, None), sha256(data)
        else:
            version = serving_version(registry, args.stage)
            data = registry.bundle(version)  # checked against the signed record's sha256
            opened = Bundle.open(data)
            model = load(opened, version)
    except NoVersion as error:
        raise Refused(str(error)) from None
    explainer = None
    if args.explain:
        explainer = explainer_of(opened, model.contract)
    inference = InferenceLog.of(settings, registry.fs, registry.root)
    run_id = uuid.uuid4().hex if inference else None
    if inference:
        check_excluded(model.contract, settings.inference_log_exclude)
    verified = {
        "version": model.version,
        "stage": None if args.bundle else args.stage,
        "bundle_sha256": bundle_sha256,
        "bundle_signature_checked": not args.trust_unsigned,
    }
    if args.engine == "dask":
        return score_on_dask(args, settings, registry, signer, (data, model), inference, verified)
    if any(given is not None for given in (args.scheduler, args.workers, args.piece_rows)):
        raise Refused("--scheduler, --workers and --piece-rows are for --engine dask")
    source, target = Path(args.input), Path(args.output)
    rejects = target.with_name(f"{target.stem}.rejects.csv")
    try:
        counts = batch.score(
            model,
            source,
            target,
            rejects,
            args.chunk_rows,
            explainer,
            inference and (inference, run_id),
        )
    except (batch.BatchError, FileNotFoundError) as error:
        raise Refused(str(error)) from None
    details = {
        **verified,
        "input": str(source),
        "input_sha256": batch.sha256_of(source),
        "output": str(target),
        "output_sha256": batch.sha256_of(target),
        "rejects_sha256": batch.sha256_of(rejects),
    }
    record_scored(args, settings, (registry, signer), details, counts, run_id)
    print(
        f"scored {counts.rows_scored} of {counts.rows_in} rows with version {model.version} "
        f"into {target}; {counts.rows_rejected} rejected into {rejects}"
    )
    if run_id:
        print(f"inference log: the rows are logged under request id {run_id}")
    return 0


def record_scored(
    args: argparse.Namespace,
    settings: Settings,
    log: tuple[Any, Any],
    details: dict[str, Any],
    counts: Any,
    run_id: str | None,
) -> None:
    """The `scored` record of a run: what it read and wrote, its counts and duration."""
    from dataclasses import asdict

    registry, signer = log
    details |= {**asdict(counts), **timed(args), "inference_run_id": run_id}
    registry.record("scored", current_actor(args.actor, settings), details, signer)


def score_on_dask(
    args: argparse.Namespace,
    settings: Settings,
    registry: Any,
    signer: Any,
    model: tuple[bytes, Any],
    inference: Any,
    verified: dict[str, Any],
) -> int:
    """score --engine dask: a folder or glob of files into a folder of parts, on a cluster."""
    import uuid

    from . import distributed
    from .batch import BatchError

    run_id = uuid.uuid4().hex if inference else None
    data, loaded = model
    try:
        result = distributed.score(
            data,
            loaded,
            args.input,
            args.output,
            args.chunk_rows,
            piece_rows=distributed.PIECE_ROWS if args.piece_rows is None else args.piece_rows,
            scheduler=args.scheduler,
            workers=args.workers,
            explain=args.explain,
            inference=inference and (inference, run_id),
        )
    except (BatchError, FileNotFoundError, ImportError) as error:
        raise Refused(str(error)) from None
    counts = result.counts
    details = {
        **verified,
        "engine": "dask",
        "scheduler": result.scheduler,
        "workers": result.workers,
        "input": args.input,
        "inputs": result.inputs,
        "output": args.output,
        "parts": [
            {key: part[key] for key in ("part", "sha256", "rejects", "rejects_sha256")}
            for part in result.parts
        ],
    }
    record_scored(args, settings, (registry, signer), details, counts, run_id)
    print(
        f"scored {counts.rows_scored} of {counts.rows_in} rows from {len(result.inputs)} file(s) "
        f"with version {loaded.version} on {result.workers} Dask worker(s) into "
        f"{len(result.parts)} part(s) in {args.output}; {counts.rows_rejected} rejected into "
        f"{args.output.rstrip('/')}/_rejects"
    )
    if run_id:
        print(f"inference log: the rows are logged under request ids {run_id}-<input number>")
    return 0


def feedback(args: argparse.Namespace, settings: Settings) -> int:
    from . import science
    from .inference import record_feedback

    registry = open_registry(settings)
    result = record_feedback(
        registry.fs, registry.root, science.contract(), Path(args.labels), args.key, args.actual
    )
    print(
        f"feedback: {result.matched} of {result.given} labels matched logged predictions; "
        f"{result.written} outcome(s) appended to {result.path}"
    )
    return 0


def sql(args: argparse.Namespace, settings: Settings) -> int:
    import fsspec

    from . import sql, storage
    from .models import NoVersion, serving_version

    if args.bundle:
        opened, version = bundle_file(args, settings)[0], None
    else:
        registry = open_registry(settings)
        try:
            version = args.version or serving_version(registry, args.stage)
        except NoVersion as error:
            raise Refused(str(error)) from None
        opened = Bundle.open(registry.bundle(version))
    text = sql.export(opened, version, table=args.table, dialect=args.dialect, keep=args.keep)
    if args.dialect not in sql.PROVEN:
        print(
            f"sql: the query is not proven in {args.dialect} (packaging proves DuckDB, lab2prod's "
            "tests PostgreSQL): compare its answers on some rows with `nox -s score` first",
            file=sys.stderr,
        )
    if args.output:
        target = Path(args.output).resolve()
        storage.put(fsspec.filesystem("file"), str(target), text.encode())
        print(f"sql: wrote {target}", file=sys.stderr)
    elif not args.dsn:
        print(text, end="")
    if args.dsn:
        view = args.view or f"{args.table.rsplit('.', 1)[-1]}_scores"
        sql.create_view(args.dsn, args.dialect, view, text)
        model = "the bundle's model" if version is None else f"version {version}"
        print(f"sql: the view {view} scores {args.table} with {model}")
    return 0


def explainer_of(opened: Bundle, contract: Any) -> Any:
    """score --explain: the explainer of the scoring bundle, or why there is none."""
    from .explain import Explainer, Unexplainable

    try:
        return Explainer.of(opened, contract)
    except Unexplainable as error:
        raise Refused(f"--explain: {error}") from None


def monitor(args: argparse.Namespace, settings: Settings) -> int:
    import yaml

    from . import monitor, science

    registry = open_registry(settings)
    signer = signing.signer_for("monitored", settings.project_dir, registry.log.trust)
    params = yaml.safe_load((settings.project_dir / "params.yaml").read_text())
    limits = monitor.thresholds_from(params)
    days = limits["window_days"] if args.days is None else args.days
    start, end = monitor.window(args.end, days)
    details = monitor.monitor(
        registry, params, args.stage, start, end, science.contract().target.task
    )
    details["duration_seconds"] = took(args)
    registry.record("monitored", current_actor(args.actor, settings), details, signer)
    print("\n".join(monitor.summary_lines(details, limits["min_rows"])))
    lines = monitor.breach_lines(details)  # what a breach's notification will carry, too
    if not lines:
        print(f"monitor: nothing broke in {args.stage}")
        return 0
    print("\n".join(f"BREACH {line}" for line in lines))
    notify(
        settings,
        "monitor_breach",
        f"{args.stage}: {len(lines)} monitoring threshold(s) breached",
        lines,
        {"stage": args.stage, "window": details["window"], "breaches": details["breaches"]},
    )
    return 1


def schema(args: argparse.Namespace, settings: Settings) -> int:
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


def keys(args: argparse.Namespace, settings: Settings) -> int:
    path = settings.project_dir / signing.KEYS_FILE
    trust = signing.load_trust(path)
    if args.action == "new":
        roles = signing.ROLES if args.role == "all" else (args.role,)
        made = {role: signing.Signer.generate() for role in roles}
        retiring = [key.id for role in roles for key in trust.active(role)]
        change_keys(settings, trust, made, retiring, args.new_project)
        for role, signer in made.items():
            if args.print:
                print(signer.secret())
                where = (
                    f"printed above: store it as the secret {signing.private_key_variable(role)}"
                )
            else:
                key_file = settings.project_dir / signing.PRIVATE_DIR / f"{role}.pem"
                key_file.parent.mkdir(exist_ok=True)
                key_file.touch(mode=0o600)
                key_file.write_text(signer.pem(), encoding="utf-8")
                where = f"in {key_file.relative_to(settings.project_dir)} (git ignores it)"
            print(f"keys: new {role} key {signer.id}; its private key is {where}", file=sys.stderr)
    elif args.action == "retire":
        if args.key not in trust.keys or trust.keys[args.key].retired_after is not None:
            raise Refused(f"{args.key} is not an active key in {signing.KEYS_FILE}")
        change_keys(settings, trust, {}, [args.key], False)
    for key in trust.keys.values():
        here = signing.private_key(key.role, settings.project_dir)
        status = (
            "active" if key.retired_after is None else f"retired after record {key.retired_after}"
        )
        held = " (private key here)" if here and here.id == key.id else ""
        print(f"{key.id}  {key.role:<8} {status}{held}")
    if args.action != "list":
        print(
            f"keys: commit {signing.KEYS_FILE}: the project trusts what it lists", file=sys.stderr
        )
    return 0


def change_keys(
    settings: Settings,
    trust: signing.Trust,
    added: dict[str, signing.Signer],
    retiring: list[str],
    new_project: bool,
) -> None:
    """Trust the added keys and retire others, then save trust/keys.json.

    Retiring needs the registry: a `keys_changed` record, signed by a key readers already trust,
    notes the change in the log, and a retired key may sign nothing after it. The first
    keys of a project whose log predates signing accept its unsigned records, and no later ones.
    """
    first = not trust.keys
    for role, signer in added.items():
        trust.keys[signer.id] = signing.TrustedKey(signer.id, role, signer.private.public_key())
    if first and not new_project:
        legacy = signing.Trust(unsigned_until=sys.maxsize)
        log = Registry(settings.registry, settings.model_name, legacy).log
        trust.unsigned_until = len(log.records())
    if retiring:
        registry = open_registry(settings)
        registry.log.trust = trust
        # The handover is signed by a key readers already trust, best the one it retires, so
        # clones and services with the old trust file still verify it.
        held = [
            signer
            for role in signing.ROLES
            if (signer := signing.private_key(role, settings.project_dir))
            and signer.id in trust.keys
            and trust.keys[signer.id].retired_after is None
        ]
        held.sort(key=lambda signer: signer.id not in retiring)
        signers = held + list(added.values())
        if not signers:
            raise Refused("changing keys needs a trusted private key here to sign the change")
        details = {"added": sorted(added_signer.id for added_signer in added.values()),
                   "retired": retiring}  # fmt: skip
        actor = current_actor(None, settings)
        record = registry.record("keys_changed", actor, details, signers[0])
        for key_id in retiring:
            old = trust.keys[key_id]
            trust.keys[key_id] = signing.TrustedKey(old.id, old.role, old.public,
                                                    record.sequence)  # fmt: skip
        print(f"keys: record {record.sequence} notes the change in the log", file=sys.stderr)
    signing.save_trust(settings.project_dir / signing.KEYS_FILE, trust)


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
    sub.add_argument(
        "--resume",
        action="store_true",
        help="finish a retrain that was stopped after dvc repro: commit its results and go on",
    )

    sub = verb("deploy", deploy, "promote a version to a stage")
    sub.add_argument("--version", type=int, help="default: the newest version that passed the gate")
    sub.add_argument("--stage", default=DEFAULT_STAGE)
    sub.add_argument("--approved-by", required=True, help="the person who approved it")
    sub.add_argument("--reason", default="")

    sub = verb("rollback", rollback, "return a stage to the version it served before")
    sub.add_argument("--stage", default=DEFAULT_STAGE)
    sub.add_argument("--approved-by", required=True, help="the person who approved it")
    sub.add_argument("--reason", required=True)

    sub = verb("audit", audit, "verify the audit log and print the history")
    sub.add_argument(
        "--expect-head",
        action="append",
        default=[],
        metavar="SEQUENCE:SHA256",
        help="fail unless the log still holds this record (a head audit printed before)",
    )
    sub.add_argument(
        "--allow-empty", action="store_true", help="pass on a registry that has no records yet"
    )

    sub = verb("serve", serve, "serve a registry stage (or a bundle file) over HTTP")
    sub.add_argument("--stage", default=DEFAULT_STAGE)
    sub.add_argument("--bundle", help="serve this bundle file instead of a registry stage")
    trust_unsigned_option(sub)
    project_settings.add_server_options(sub)
    sub.add_argument(
        "--poll-seconds",
        type=float,
        default=2.0,
        help="how often to check the registry for a new version",
    )

    sub = verb("score", score, "score a CSV or Parquet file with the version a stage serves")
    sub.add_argument("input", help="a file; with --engine dask, a folder or glob (or s3://...)")
    sub.add_argument("output", help="same format as the input, rejects beside it; with "
                     "--engine dask, a new folder of Parquet parts")  # fmt: skip
    sub.add_argument("--stage", default=DEFAULT_STAGE)
    sub.add_argument("--bundle", help="score with this bundle file instead of a registry stage")
    sub.add_argument("--chunk-rows", type=int, default=100_000)
    sub.add_argument("--explain", action="store_true",
                     help="add each feature's contribution to each answer")  # fmt: skip
    sub.add_argument("--actor")
    trust_unsigned_option(sub)
    sub.add_argument("--engine", choices=["process", "dask"], default="process",
                     help="process: this process, one file; dask: a Dask cluster")  # fmt: skip
    sub.add_argument("--scheduler", help="--engine dask: the scheduler's address "
                     "(default: a local cluster of worker processes)")  # fmt: skip
    sub.add_argument("--workers", type=int, help="--engine dask: local worker processes "
                     "(default: one per core)")  # fmt: skip
    sub.add_argument("--piece-rows", type=int, help="--engine dask: rows of a Parquet file "
                     f"per task, in whole row groups (default {1_000_000:_})")  # fmt: skip

    sub = verb("monitor", monitor, "drift, live performance, volumes and job durations")
    sub.add_argument("--stage", default=DEFAULT_STAGE)
    sub.add_argument("--days", type=float, help="the window in days (default: monitor.window_days)")
    sub.add_argument("--end", help="the window's end, an ISO date or time (default: now)")
    sub.add_argument("--actor")

    sub = verb("schema", schema, "infer the input contract from a CSV or Parquet file")
    sub.add_argument("data", help="a CSV or Parquet file of the data, target included")
    sub.add_argument("--target", required=True, help="the column the model predicts")
    sub.add_argument("--task", choices=["binary", "multiclass", "regression"],
                     help="default: inferred from the target's values")  # fmt: skip
    sub.add_argument("--positive", help="binary: the class to flag (default: 1, true or rarer)")
    sub.add_argument("--margin", type=float, default=0.5,
                     help="ranges are widened by this share of their observed span")  # fmt: skip

    sub = verb("feedback", feedback, "attach actual outcomes to logged predictions")
    sub.add_argument("labels", help="a CSV or Parquet file of actual outcomes")
    sub.add_argument(
        "--key",
        metavar="COLUMN",
        help="match on this pass-through column instead of request_id (and row, default 0)",
    )
    sub.add_argument("--actual", metavar="COLUMN", help="the outcome column (default: the target)")

    sub = verb("sql", sql, "one SQL query that scores a table in the database with a version")
    sub.add_argument("--dialect", required=True, choices=DIALECTS)
    sub.add_argument("--table", default="inputs", help="the table (or view) to score")
    which = sub.add_mutually_exclusive_group()
    which.add_argument("--stage", default=DEFAULT_STAGE)
    which.add_argument("--version", type=int)
    which.add_argument("--bundle", help="the model of this bundle file instead of the registry's")
    trust_unsigned_option(sub)
    sub.add_argument(
        "--keep",
        action="append",
        metavar="COLUMN",
        help="a column of the table to keep beside the answers, such as its key (repeat it; "
        "default: the contract's pass-through columns)",
    )
    sub.add_argument("--output", help="write the query to this file (default: stdout)")
    sub.add_argument(
        "--dsn",
        help="create (or replace) a view of the scores in this database: "
        "postgresql://USER@HOST:PORT/DATABASE or duckdb:PATH",
    )
    sub.add_argument("--view", help="the view --dsn creates (default: TABLE_scores)")

    sub = verb("reproduce", reproduce, "rebuild a version and compare it with the record")
    sub.add_argument("--version", type=int, required=True)
    sub.add_argument("--actor")

    sub = verb("dashboard", dashboard, "write the model's dashboard, one self-contained page")
    sub.add_argument("--output", help="default: reports/dashboard.html")

    sub = verb("gc", gc, "remove what no recorded version needs (a dry run unless --apply)")
    sub.add_argument("--apply", action="store_true", help="remove it and record what went")
    sub.add_argument(
        "--cloud",
        action="store_true",
        help="also remove unneeded objects from the DVC remote (other clones lose them too)",
    )
    sub.add_argument("--actor")

    sub = verb("keys", keys, "list the trusted signing keys; make, rotate or retire one")
    actions = sub.add_subparsers(dest="action")
    new = actions.add_parser("new", help="make a key pair for a role; an active one is retired")
    new.add_argument("--role", choices=[*signing.ROLES, "all"], required=True)
    new.add_argument(
        "--print",
        action="store_true",
        help="print the private key (for a CI secret) instead of keeping it in .keys/",
    )
    new.add_argument("--new-project", action="store_true", help=argparse.SUPPRESS)
    retire = actions.add_parser("retire", help="stop trusting a key for new records")
    retire.add_argument("key", help="the key's id, as `keys` lists it")
    sub.set_defaults(action="list")
    return main


def trust_unsigned_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--trust-unsigned",
        action="store_true",
        help="load a --bundle file whose signature does not verify (local experiments only: a "
        "bundle's pipeline is a pickle, which can run any code)",
    )


STORAGE_CLIENTS = {"botocore", "aiobotocore", "aiohttp"}


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.started = time.monotonic()
    # A stop from a scheduler or `kill` cleans up as Ctrl-C does (temporary files, locks), even
    # where a shell started the command in the background with SIGINT ignored.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, interrupt)
    try:
        return args.handler(args, project_settings.load())
    except (Refused, BundleError, commands.CommandError, NoContract, Untrusted) as error:
        print(f"{args.verb}: refused: {error}", file=sys.stderr)
    except AuditError as error:
        print(f"{args.verb}: the audit log is broken: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{args.verb}: stopped", file=sys.stderr)
        return 130
    except OSError as error:
        # A registry or file that cannot be reached: a missing mount, a file where a folder is.
        print(f"{args.verb}: cannot reach {error.filename or 'storage'}: {error}", file=sys.stderr)
    except Exception as error:
        # S3's client raises its own errors for an endpoint it cannot reach; the rest are bugs.
        if type(error).__module__.split(".")[0] not in STORAGE_CLIENTS:
            raise
        print(f"{args.verb}: cannot reach the registry's storage: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
