"""The model registry: bundles and their audit log on any fsspec filesystem (a directory, S3, ...).

Layout under `<registry>/<model name>/`:
    bundles/<sha256>.zip   every published bundle, named by its content hash
    log/<sequence>.json    the audit log; which version serves in which stage is a fold over it

A bundle is written before the record that publishes it, so a crash leaves at most an unnamed
bundle that no record points to, never a visible half-version.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import fsspec

from . import storage
from .anchor import Anchors, Head
from .audit import AuditError, AuditLog, Record, Refused, genesis, sha256
from .settings import Settings
from .signing import Signer, Trust, project_trust

DEFAULT_STAGE = "production"


@dataclass
class State:
    """What the log says now: every published version, and each stage's serving history."""

    versions: dict[int, dict[str, Any]] = field(default_factory=dict)
    history: dict[str, list[int]] = field(default_factory=dict)
    published_at: dict[int, str] = field(default_factory=dict)  # the publishing record's time
    served: set[int] = field(default_factory=set)  # every version ever promoted, rolled back or not
    collected: dict[int, Record] = field(default_factory=dict)  # whose bundle gc removed, and when

    def serving(self, stage: str) -> int | None:
        served = self.history.get(stage)
        return served[-1] if served else None

    def newest_passing(self) -> int | None:
        passing = [number for number, version in self.versions.items() if promotable(version)]
        return max(passing, default=None)


def promotable(version: dict[str, Any]) -> bool:
    return version["gate"]["passed"] and not version["manifest"]["dirty"]


def fold(records: list[Record]) -> State:
    """Replay the log. A record that contradicts the state before it is tampering."""
    state = State()
    for record in records:
        details = record.details
        name = f"record {record.sequence:010d}.json"
        if record.action == "published":
            if details["version"] != len(state.versions) + 1:
                raise AuditError(f"{name} publishes version {details['version']} out of order")
            state.versions[details["version"]] = details
            state.published_at[details["version"]] = record.timestamp
        elif record.action == "promoted":
            if details["version"] not in state.versions:
                raise AuditError(f"{name} promotes unknown version {details['version']}")
            if details["version"] in state.collected:
                raise AuditError(f"{name} promotes version {details['version']}, which gc removed")
            if not promotable(state.versions[details["version"]]):
                # `deploy` refuses these; a record that promotes one went around it.
                raise AuditError(
                    f"{name} promotes version {details['version']}, which failed the gate or "
                    "was built from uncommitted changes"
                )
            state.history.setdefault(details["stage"], []).append(details["version"])
            state.served.add(details["version"])
        elif record.action == "rolled_back":
            served = state.history.get(details["stage"], [])
            if len(served) < 2 or served[-2] != details["to_version"]:
                raise AuditError(f"{name} rolls back to a version the stage did not serve before")
            served.pop()
        elif record.action == "collected":
            for version in details["versions"]:
                if version not in state.versions or version in state.collected:
                    raise AuditError(f"{name} collects version {version}, unknown or gone")
                if version in state.served:
                    raise AuditError(f"{name} collects version {version}, which served")
                state.collected[version] = record
    return state


class Registry:
    """A registry location, read with the keys a project trusts and the heads it anchors."""

    def __init__(
        self, url: str, model_name: str, trust: Trust, anchors: Anchors | None = None
    ) -> None:
        self.url = url
        self.fs, self.root = self.location(url, model_name)
        self.log = AuditLog(self.fs, f"{self.root}/log", trust, genesis(model_name))
        self.anchors = anchors

    @staticmethod
    def location(url: str, model_name: str) -> tuple[fsspec.AbstractFileSystem, str]:
        """The filesystem of a registry, and the folder of a model's bundles, log and
        inference log in it."""
        fs, root = fsspec.core.url_to_fs(url)
        return fs, f"{root.rstrip('/')}/{model_name}"

    def bundle_path(self, digest: str) -> str:
        return f"{self.root}/bundles/{digest}.zip"

    def records(self) -> list[Record]:
        """Every record, verified (hashes, links, signatures) and checked against the anchors."""
        records = self.log.records()
        if self.anchors:
            self.anchors.check(records)
            self.anchors.remember(records)
        return records

    def state(self) -> State:
        return fold(self.records())

    def publish(
        self,
        bundle: bytes,
        manifest: dict[str, Any],
        gate: dict[str, Any],
        actor: str,
        signer: Signer,
        extra: dict[str, Any] | None = None,
    ) -> Record:
        """`extra`: more details for the record, such as how long the job took."""
        digest = sha256(bundle)
        storage.put(self.fs, self.bundle_path(digest), bundle)

        def decide(records: list[Record]) -> dict[str, Any]:
            version = len(fold(records).versions) + 1
            return {"version": version, "bundle_sha256": digest, "manifest": manifest, "gate": gate,
                    **(extra or {})}  # fmt: skip

        return self._append("published", actor, decide, signer)

    def bundle(self, version: int, state: State | None = None) -> bytes:
        """The bundle of a version, after checking its bytes against the published sha256."""
        state = state or self.state()
        if version not in state.versions:
            raise Refused(f"version {version} is not in the registry; `nox -s audit` lists them")
        if version in state.collected:
            record = state.collected[version]
            raise Refused(
                f"version {version}'s bundle was removed by gc on {record.timestamp[:10]} "
                f"(record {record.sequence}); it never served"
            )
        expected = state.versions[version]["bundle_sha256"]
        try:
            data = self.fs.cat_file(self.bundle_path(expected))
        except FileNotFoundError:
            raise AuditError(f"the bundle of version {version} ({expected}) is missing") from None
        if sha256(data) != expected:
            raise AuditError(
                f"the bundle of version {version} does not match its sha256 in the registry: "
                "it was modified after publishing"
            )
        return data

    def _append(self, action: str, actor: str, decide: Any, signer: Signer) -> Record:
        records = self.records()  # never extend a log that was cut or rewritten
        retired = {
            key for record in records if record.action == "keys_changed"
            for key in record.details.get("retired", [])
        }  # fmt: skip
        if signer.id in retired:
            # This clone's trust file may predate the rotation; the log knows better.
            raise Refused(
                f"key {signer.id} was retired in the log (a keys_changed record): pull the "
                "current trust/keys.json and sign with the role's current key"
            )
        record = self.log.append(action, actor, decide, signer)
        if self.anchors:
            self.anchors.remember([record])
        return record

    def promote(
        self,
        version: int | None,
        stage: str,
        approver: str,
        signer: Signer,
        reason: str = "",
        extra: dict[str, Any] | None = None,
    ) -> Record:
        require_approver(approver)

        def decide(records: list[Record]) -> dict[str, Any]:
            state = fold(records)
            chosen = version if version is not None else state.newest_passing()
            if chosen is None:
                raise Refused("no published version passed the gate; run `nox -s retrain`")
            if chosen not in state.versions:
                raise Refused(f"version {chosen} is not in the registry")
            published = state.versions[chosen]
            if published["manifest"]["dirty"]:
                raise Refused(
                    f"version {chosen} was built from uncommitted changes and can never be "
                    "promoted; commit, then `nox -s retrain`"
                )
            if not published["gate"]["passed"]:
                reasons = "; ".join(published["gate"]["reasons"])
                raise Refused(f"version {chosen} failed the deploy gate ({reasons})")
            if state.serving(stage) == chosen:
                raise Refused(f"version {chosen} already serves in {stage}")
            self.bundle(chosen, state)
            return {
                "version": chosen,
                "stage": stage,
                "reason": reason,
                "from_version": state.serving(stage),
                **(extra or {}),
            }

        return self._append("promoted", approver, decide, signer)

    def rollback(
        self,
        stage: str,
        approver: str,
        reason: str,
        signer: Signer,
        extra: dict[str, Any] | None = None,
    ) -> Record:
        require_approver(approver)
        if not reason.strip():
            raise Refused("a rollback needs a reason: --reason TEXT")

        def decide(records: list[Record]) -> dict[str, Any]:
            state = fold(records)
            served = state.history.get(stage, [])
            if len(served) < 2:
                raise Refused(f"{stage} has no earlier version to roll back to")
            self.bundle(served[-2], state)
            return {
                "stage": stage,
                "from_version": served[-1],
                "to_version": served[-2],
                "reason": reason,
                **(extra or {}),
            }

        return self._append("rolled_back", approver, decide, signer)

    def record(self, action: str, actor: str, details: Any, signer: Signer) -> Record:
        """Append a record that changes no stage (scored, reproduced, monitored, collected,
        keys_changed); `details`
        is a dict, or a function of the records before it."""
        decide = details if callable(details) else lambda records: details
        return self._append(action, actor, decide, signer)

    def verify(self) -> tuple[list[Record], State]:
        """Check every record, every link and signature, the anchored heads, the fold, and every
        published bundle's sha256 (but those gc removed, of versions that never served)."""
        records = self.records()
        state = fold(records)
        for number in state.versions.keys() - state.collected.keys():
            self.bundle(number, state)
        return records, state


def require_approver(approver: str | None) -> None:
    if not approver or not approver.strip():
        raise Refused("promotion and rollback need an approver: --approved-by NAME")


def open_registry(
    settings: Settings, expected: list[Head] | None = None, *, remember: bool = True
) -> Registry:
    """The project's registry, read with the keys it trusts and checked against its anchors;
    `remember`: note verified heads on this machine (a service keeps them in memory instead)."""
    # A local registry by its path from the project, as every clone on every machine names it.
    place = settings.registry
    if "://" not in place:
        place = os.path.relpath(place, settings.project_dir)
    location = f"{place.rstrip('/')}/{settings.model_name}"
    anchors = Anchors(settings.project_dir, location, expected or [], remember=remember)
    trust = project_trust(settings.project_dir)
    return Registry(settings.registry, settings.model_name, trust, anchors)
