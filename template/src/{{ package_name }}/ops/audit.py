"""The audit log: the registry's source of truth, an append-only chain of records.

Each record is one object named by its sequence number (`0000000001.json`, ...). It holds the
sha256 of its own body, the sha256 of its predecessor, and a signature of its sha256 by a key the
project trusts for the action (`signing.py`). Editing, deleting or reordering records breaks the
chain where it happened; forging one needs a trusted private key; cutting the newest ones is
caught by the heads anchored outside the registry (`anchor.py`). Appends are create-if-absent:
two writers that race for the same number cannot both win; the loser reads the new head, decides
again and retries.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec

from . import storage
from .signing import Signer, Trust, Untrusted

ACTIONS = ("published", "promoted", "rolled_back", "scored", "reproduced", "keys_changed")
GENESIS = "0" * 64
RECORD_NAME = re.compile(r"^(\d{10})\.json$")
MAX_ATTEMPTS = 200


class AuditError(Exception):
    """The log is broken or tampered with; the message names the record."""


class Refused(Exception):
    """The requested action is not allowed in the registry's current state."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Record:
    sequence: int
    action: str
    actor: str
    timestamp: str
    details: dict[str, Any]
    previous_sha256: str
    sha256: str
    signed_by: str | None  # the id of the key that signed it; None before signing existed

    @classmethod
    def parse(cls, name: str, data: bytes, trust: Trust) -> Record:
        try:
            document = json.loads(data)
            signature = document.get("signature")
            body = document["body"]
            record = cls(
                sequence=body["sequence"],
                action=body["action"],
                actor=body["actor"],
                timestamp=body["at"],
                details=body["details"],
                previous_sha256=body["previous_sha256"],
                sha256=document["sha256"],
                signed_by=signature["key"] if isinstance(signature, dict) else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise AuditError(f"record {name} is not a valid audit record: {error}") from None
        if sha256(canonical(body)) != record.sha256:
            raise AuditError(f"record {name} was modified: its content does not match its sha256")
        try:
            trust.check_record(record.sequence, record.action, record.sha256, signature)
        except Untrusted as error:
            raise AuditError(f"record {name} {error}") from None
        return record


def encode(
    sequence: int,
    action: str,
    actor: str,
    details: dict[str, Any],
    previous: str,
    signer: Signer,
) -> bytes:
    body = {
        "sequence": sequence,
        "action": action,
        "actor": actor,
        "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "details": details,
        "previous_sha256": previous,
    }
    digest = sha256(canonical(body))
    document = {"body": body, "sha256": digest, "signature": signer.sign(digest.encode())}
    return json.dumps(document, indent=1).encode()


class AuditLog:
    """The records under `root` on filesystem `fs`, read incrementally and verified as read."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, trust: Trust) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.trust = trust
        self._records: list[Record] = []

    def path(self, sequence: int) -> str:
        return f"{self.root}/{sequence:010d}.json"

    def _names(self) -> list[str]:
        try:
            listing = self.fs.ls(self.root, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        names = [entry.rstrip("/").rsplit("/", 1)[-1] for entry in listing]
        # Hidden names are a local writer's temporary files, never records.
        return sorted(name for name in names if not name.startswith("."))

    def records(self) -> list[Record]:
        """Every record, in order, each checked against its own hash and its predecessor."""
        names = self._names()
        known = len(self._records)
        for position, name in enumerate(names):
            match = RECORD_NAME.match(name)
            if not match:
                raise AuditError(f"unexpected object {name} in the audit log {self.root}")
            if int(match.group(1)) != position + 1:
                missing = position + 1
                raise AuditError(f"record {missing:010d}.json is missing: the log jumps to {name}")
        if len(names) < known:
            raise AuditError(f"records after {len(names):010d}.json were deleted")
        if known:
            # The newest record read before must still be the same one: no rewritten head.
            newest = self._records[-1]
            if self._read(names[known - 1]).sha256 != newest.sha256:
                raise AuditError(f"record {names[known - 1]} was replaced after it was read")
        for name in names[known:]:
            record = self._read(name)
            self._check_link(name, record)
            self._records.append(record)
        return list(self._records)

    def _read(self, name: str) -> Record:
        try:
            data = self.fs.cat_file(f"{self.root}/{name}")
        except FileNotFoundError:
            raise AuditError(f"record {name} disappeared while the log was read") from None
        return Record.parse(name, data, self.trust)

    def _check_link(self, name: str, record: Record) -> None:
        expected_sequence = len(self._records) + 1
        previous = self._records[-1].sha256 if self._records else GENESIS
        if record.sequence != expected_sequence:
            raise AuditError(
                f"record {name} says it is number {record.sequence}: records were reordered"
            )
        if record.previous_sha256 != previous:
            raise AuditError(
                f"record {name} does not follow record {expected_sequence - 1:010d}.json: "
                "the chain is broken (a record was replaced, reordered or removed)"
            )
        if record.action not in ACTIONS:
            raise AuditError(f"record {name} has an unknown action {record.action!r}")

    def append(
        self,
        action: str,
        actor: str,
        decide: Callable[[list[Record]], dict[str, Any]],
        signer: Signer,
    ) -> Record:
        """Append a record whose details `decide` derives from the records before it.

        `decide` runs again after every lost race, so it always sees the log it extends; it
        raises Refused when the action is no longer allowed.
        """
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        for attempt in range(MAX_ATTEMPTS):
            records = self.records()
            details = decide(records)
            previous = records[-1].sha256 if records else GENESIS
            sequence = len(records) + 1
            data = encode(sequence, action, actor, details, previous, signer)
            if storage.create(self.fs, self.path(sequence), data):
                record = Record.parse(self.path(sequence), data, self.trust)
                self._records.append(record)
                return record
            # Another writer took this number: back off a little, then read its record.
            time.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))
        raise AuditError(f"could not append to {self.root} after {MAX_ATTEMPTS} attempts")
