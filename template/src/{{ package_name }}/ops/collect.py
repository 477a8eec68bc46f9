"""Clean-up (`gc`): remove what no recorded version needs, never what a served one does.

What goes, each past `retention:` in params.yaml:
- the bundles of versions that never served in any stage (a fold over the audit log), except
  the newest version and the newest that passed the gate, which a deploy may still pick;
- inference log and feedback day folders older than `inference_days`;
- DVC cache objects used neither by the workspace nor by a commit a kept version was built from
  (the remote too, only when asked);
- temporaries of killed runs in the registry and build/bundles/, and bundles a crashed publish
  left without a record.

A dry run by default. When applied, a `collected` record names what went, before the bundles
are removed: a crash half-way leaves bundles the log already calls gone, which the next run
removes, never a log that points at a missing bundle of a live version.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from . import storage
from .audit import Record, Refused
from .bundle import git
from .commands import CommandError
from .registry import Registry, State, fold
from .settings import Settings
from .signing import Signer

LOG_FOLDERS = ("inference", "feedback")  # the inference log and its ground truth, by day
DAY_PREFIX = "day="
ORPHAN_AGE = timedelta(days=1)  # a bundle younger than this may belong to a publish under way


@dataclass
class Plan:
    """What gc removes (or would), with the bytes of each part."""

    versions: dict[int, str] = field(default_factory=dict)  # version -> bundle sha256
    bundles: dict[str, int] = field(default_factory=dict)  # registry path -> bytes
    days: dict[str, list[str]] = field(default_factory=dict)  # log folder -> days
    day_folders: dict[str, int] = field(default_factory=dict)  # registry path -> bytes
    orphans: dict[str, int] = field(default_factory=dict)  # registry path -> bytes
    leftovers: dict[Path, int] = field(default_factory=dict)  # local temporary -> bytes
    dvc_objects: int = 0
    dvc_bytes: int = 0
    dvc_remote_objects: int = 0
    kept_commits: list[str] = field(default_factory=list)  # whose DVC objects stay

    @property
    def total_bytes(self) -> int:
        parts = (self.bundles, self.day_folders, self.orphans, self.leftovers)
        return sum(sum(part.values()) for part in parts) + self.dvc_bytes

    @property
    def empty(self) -> bool:
        return not (self.total_bytes or self.versions or self.dvc_remote_objects)


def retention(settings: Settings) -> tuple[int, int]:
    """(bundles_days, inference_days) from params.yaml's `retention:` section."""
    params = yaml.safe_load((settings.project_dir / "params.yaml").read_text(encoding="utf-8"))
    section = (params or {}).get("retention")
    try:
        days = int(section["bundles_days"]), int(section["inference_days"])
    except (TypeError, KeyError, ValueError):
        raise Refused(
            "params.yaml needs a `retention:` section with whole numbers of days: "
            "bundles_days and inference_days"
        ) from None
    if min(days) < 0:
        raise Refused("retention days in params.yaml cannot be negative")
    return days


def collectable(state: State, before: datetime) -> list[int]:
    """Versions whose bundles may go: never served, published before `before`, neither the
    newest nor the newest that passed the gate, not collected already."""
    keep = {max(state.versions, default=None), state.newest_passing()}
    return [
        number
        for number in state.versions
        if number not in state.served | state.collected.keys() | keep
        and datetime.fromisoformat(state.published_at[number]) < before
    ]


def size(registry: Registry, path: str) -> int:
    return registry.fs.du(path) if registry.fs.isdir(path) else registry.fs.size(path)


def old_days(registry: Registry, folder: str, before: date) -> list[tuple[str, str]]:
    """(day, path) of the day folders under `folder` older than `before`."""
    found = []
    for path in registry.fs.glob(f"{registry.root}/{folder}/{DAY_PREFIX}*"):
        day = path.rstrip("/").rsplit("/", 1)[-1].removeprefix(DAY_PREFIX)
        try:
            if date.fromisoformat(day) < before:
                found.append((day, path))
        except ValueError:
            continue  # not a folder the log writes; not ours to judge
    return sorted(found)


def local_leftovers(settings: Settings, registry: Registry) -> list[Path]:
    """Temporaries of killed runs: only local disks have them (object stores PUT whole)."""
    places = [settings.project_dir / "build" / "bundles"]
    if storage.is_local(registry.fs) and os.path.isdir(registry.root):
        places += [Path(folder) for folder, _, _ in os.walk(registry.root)]
    return [found for place in places if place.is_dir() for found in storage.leftovers(place)]


def orphan_bundles(registry: Registry, state: State, now: datetime) -> list[str]:
    """Bundles no record names: a publish that stopped between the bundle and its record."""
    named = {version["bundle_sha256"] for version in state.versions.values()}
    orphans = []
    for path in registry.fs.glob(f"{registry.root}/bundles/*.zip"):
        digest = path.rsplit("/", 1)[-1].removesuffix(".zip")
        modified = registry.fs.modified(path)
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=UTC)
        if digest not in named and modified < now - ORPHAN_AGE:
            orphans.append(path)
    return orphans


def kept_commits(settings: Settings, state: State, going: set[int]) -> list[str]:
    """The commits the kept versions were built from, each present in this clone."""
    commits = sorted({
        version["manifest"]["git_commit"]
        for number, version in state.versions.items()
        if number not in going and number not in state.collected
    })  # fmt: skip
    for commit in commits:
        try:
            git(settings, "cat-file", "-e", commit + "^{commit}")
        except CommandError:
            raise Refused(
                f"commit {commit[:12]}, which a recorded version was built from, is not in this "
                "clone, so its DVC data cannot be told apart: fetch the whole history "
                "(`git fetch --unshallow`) and run gc again"
            ) from None
    return commits


def dvc_collect(settings: Settings, commits: list[str], cloud: bool, apply: bool) -> tuple:
    """(objects, bytes, remote objects) not used by the workspace or `commits`; removed when
    `apply`. `dvc gc` keeps one --rev (and its ancestors), so DVC's own parts do it for a set."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc_data.hashfile.gc import gc

    try:
        with Repo(str(settings.project_dir)) as repo, repo.lock:
            used = set().union(*repo.used_objs(revs=commits or None, force=True).values())
            odbs = {id(odb): odb for _, odb in repo.cache.by_scheme() if odb}
            objects = size_of = remote_objects = 0
            for odb in odbs.values():
                wanted = {info.value for info in used if info.name == odb.hash_name}
                unused = [oid for oid in odb.all() if oid not in wanted]
                objects += len(unused)
                size_of += sum(odb.fs.size(odb.oid_to_path(oid)) for oid in unused)
                if apply:
                    gc(odb, used)
            if cloud:
                remote = repo.cloud.get_remote_odb(None, "gc --cloud")
                wanted = {info.value for info in used if info.name == remote.hash_name}
                remote_objects = sum(oid not in wanted for oid in remote.all())
                if apply:
                    gc(remote, used)
    except DvcException as error:
        raise Refused(f"DVC: {error}") from None
    return objects, size_of, remote_objects


def plan(settings: Settings, registry: Registry, state: State, now: datetime, cloud: bool) -> Plan:
    """What goes; nothing is removed."""
    bundles_days, inference_days = retention(settings)
    result = Plan()
    try:
        bundles_cut, logs_cut = (
            now - timedelta(days=bundles_days),
            now - timedelta(days=inference_days),
        )
    except OverflowError:
        raise Refused("retention days in params.yaml reach before the year 1: keep fewer") from None
    for number in collectable(state, bundles_cut):
        result.versions[number] = state.versions[number]["bundle_sha256"]
    # Bundles of versions collected before are still here if a run stopped half-way.
    gone = [state.versions[number]["bundle_sha256"] for number in state.collected]
    for digest in [*result.versions.values(), *gone]:
        path = registry.bundle_path(digest)
        if registry.fs.exists(path):
            result.bundles[path] = size(registry, path)
    cut = logs_cut.date()
    for folder in LOG_FOLDERS:
        for day, path in old_days(registry, folder, cut):
            result.days.setdefault(folder, []).append(day)
            result.day_folders[path] = size(registry, path)
    result.orphans = {path: size(registry, path) for path in orphan_bundles(registry, state, now)}
    result.leftovers = {path: path.stat().st_size for path in local_leftovers(settings, registry)}
    result.kept_commits = kept_commits(settings, state, set(result.versions))
    result.dvc_objects, result.dvc_bytes, result.dvc_remote_objects = dvc_collect(
        settings, result.kept_commits, cloud, apply=False
    )
    return result


def collect(
    settings: Settings,
    registry: Registry,
    signer: Signer | None,
    actor: str,
    *,
    cloud: bool = False,
    now: datetime | None = None,
) -> Plan:
    """Find what nothing needs; with a `signer`, record it and remove it (else a dry run)."""
    started = time.monotonic()
    now = now or datetime.now(UTC)
    state = registry.state()
    result = plan(settings, registry, state, now, cloud)
    if signer is None or result.empty:
        return result
    details: dict[str, Any] = {
        "versions": sorted(result.versions),
        "bundles_sha256": {str(number): digest for number, digest in result.versions.items()},
        "days": result.days,
        "leftovers": sorted(map(str, result.leftovers)),
        "orphan_bundles": sorted(result.orphans),
        "dvc_objects": result.dvc_objects,
        "dvc_remote_objects": result.dvc_remote_objects,
        "bytes_freed": result.total_bytes,
    }

    def decide(records: list[Record]) -> dict[str, Any]:
        taken = fold(records)
        if any(number in taken.served | taken.collected.keys() for number in result.versions):
            raise Refused("another run deployed or collected a version meanwhile: run gc again")
        return details | {"duration_seconds": round(time.monotonic() - started, 3)}

    registry.record("collected", actor, decide, signer)
    # Only once the log says what goes, so a deploy that raced this run keeps its data.
    dvc_collect(settings, result.kept_commits, cloud, apply=True)
    for path in [*result.day_folders, *result.orphans, *result.bundles]:
        registry.fs.rm(path, recursive=True)
    for path in result.leftovers:
        path.unlink(missing_ok=True)
    return result
