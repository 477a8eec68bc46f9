"""The log's head, anchored outside the registry, so cutting or rewriting its newest records shows.

A hash chain proves each record follows the one before; it cannot prove nothing came after the
last one. So the heads (sequence and sha256 of a record) that people and machines have seen are
kept where a registry writer cannot reach, and the log must still hold each of them:

- `trust/head.json`, committed: publish, deploy and rollback write it and commit it (CI pushes it),
  so the project's git history holds the registry's history;
- `.lab2prod/seen-heads.json` on this machine: the newest head any command here verified;
- `audit --expect-head SEQUENCE:SHA256`: a head known from elsewhere (a ticket, another clone);
- a running service, in memory: the log it has read (`audit.AuditLog`).

Each file maps a registry location (`<registry>/<model>`) to its head, so one project can use a
local registry on a laptop and S3 in CI.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import commands
from .audit import AuditError, Record, Refused

HEAD_FILE = Path("trust") / "head.json"
SEEN_FILE = Path(".lab2prod") / "seen-heads.json"
EXPECTED = re.compile(r"^([1-9]\d*):([0-9a-f]{64})$")


@dataclass(frozen=True)
class Head:
    sequence: int
    sha256: str
    source: str  # who saw it, for the message

    @classmethod
    def of(cls, record: Record, source: str) -> Head:
        return cls(record.sequence, record.sha256, source)

    @classmethod
    def expected(cls, text: str) -> Head:
        match = EXPECTED.match(text.strip())
        if not match:
            raise Refused(f"--expect-head wants SEQUENCE:SHA256 (as audit prints it), not {text!r}")
        return cls(int(match.group(1)), match.group(2), "--expect-head")


def check(records: Sequence[Record], heads: Sequence[Head]) -> None:
    """AuditError unless the log still holds every anchored head."""
    for head in heads:
        name = f"record {head.sequence:010d}.json"
        if len(records) < head.sequence:
            raise AuditError(
                f"the log ends at record {len(records):010d}.json, but {head.source} holds {name}: "
                "its newest records were deleted"
            )
        if records[head.sequence - 1].sha256 != head.sha256:
            raise AuditError(f"{name} is not the one {head.source} holds: the log was rewritten")


def read_heads(path: Path) -> dict[str, dict]:
    try:
        heads = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise AuditError(f"{path} is not valid JSON: {error}") from None
    valid = isinstance(heads, dict) and all(
        isinstance(head, dict)
        and isinstance(head.get("sequence"), int)
        and isinstance(head.get("sha256"), str)
        for head in heads.values()
    )
    if not valid:
        raise AuditError(f"{path} is not a map of registry locations to heads")
    return heads


def write_heads(path: Path, heads: dict[str, dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    temporary.write_text(json.dumps(heads, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)


class Anchors:
    """The heads of one registry location that this project and this machine hold."""

    def __init__(
        self,
        project_dir: Path,
        location: str,
        expected: Sequence[Head] = (),
        *,
        remember: bool = True,
    ) -> None:
        self.project_dir = project_dir
        self.location = location
        self.expected = list(expected)
        self.remembers = remember

    def _held(self, relative: Path, source: str) -> list[Head]:
        entry = read_heads(self.project_dir / relative).get(self.location)
        if not entry:
            return []
        return [Head(int(entry["sequence"]), entry["sha256"], source)]

    def heads(self) -> list[Head]:
        return [
            *self._held(HEAD_FILE, f"the committed {HEAD_FILE}"),
            *self._held(SEEN_FILE, f"this machine's {SEEN_FILE}"),
            *self.expected,
        ]

    def check(self, records: Sequence[Record]) -> None:
        check(records, self.heads())

    def remember(self, records: Sequence[Record]) -> None:
        """Note the verified head on this machine, if newer than what it held."""
        if records and self.remembers:
            self._advance(SEEN_FILE, records[-1])

    def _advance(self, relative: Path, record: Record) -> bool:
        path = self.project_dir / relative
        lock_file = self.project_dir / SEEN_FILE.parent / "heads.lock"
        lock_file.parent.mkdir(exist_ok=True)
        # Commands running at once take turns, so a head never moves backwards.
        with open(lock_file, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            heads = read_heads(path)
            if heads.get(self.location, {}).get("sequence", 0) >= record.sequence:
                return False
            heads[self.location] = {"sequence": record.sequence, "sha256": record.sha256}
            write_heads(path, heads)
        return True

    def commit(self, record: Record, message: str, identity: list[str]) -> str:
        """Write the head to trust/head.json and commit that file alone; what happened, in words.

        Concurrent lifecycle commands in one clone take turns through a lock in .git.
        """
        try:
            # A worktree's or submodule's .git is a file; git names the directory to lock in.
            common = commands.run(["git", "rev-parse", "--git-common-dir"], self.project_dir)
        except (commands.CommandError, OSError):
            self._advance(HEAD_FILE, record)
            return f"not a git clone: {HEAD_FILE} was written but not committed"
        git_dir = self.project_dir / common.strip()
        with open(git_dir / "lab2prod-head.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self._advance(HEAD_FILE, record):
                return f"{HEAD_FILE} already holds a newer head"
            path = HEAD_FILE.as_posix()
            try:
                commands.run(["git", "add", path], self.project_dir)
                commit = ["git", *identity, "commit", "--quiet", "-m", message, "--", path]
                commands.run(commit, self.project_dir)
            except commands.CommandError as error:
                return f"{HEAD_FILE} was written but not committed: {error}"
        return f"anchored record {record.sequence} in {HEAD_FILE} (committed)"
