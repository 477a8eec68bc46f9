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
import os
import random
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec

from . import storage
from .signing import Signer, Trust, Untrusted

ACTIONS = (
    "published", "promoted", "rolled_back", "scored", "reproduced", "keys_changed", "monitored",
    "collected",
)  # fmt: skip
UNNAMED_GENESIS = "0" * 64  # what the first record followed before logs were named
RECORD_NAME = re.compile(r"^(\d{10})\.json$")
MAX_ATTEMPTS = 200
PARALLEL_FROM = 500  # records per thread worth starting one for


class AuditError(Exception):
    """The log is broken or tampered with; the message names the record."""


class Refused(Exception):
    """The requested action is not allowed in the registry's current state."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def genesis(model_name: str) -> str:
    """What the first record follows: the log's name, so a model's log (or another model's)
    cannot be copied over this one and still verify."""
    return sha256(f"lab2prod audit log of {model_name}".encode())


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
    signature: Any  # {"key": id, "ed25519": ...}; None in logs that predate signing

    @property
    def signed_by(self) -> str | None:
        return self.signature.get("key") if isinstance(self.signature, dict) else None

    @property
    def name(self) -> str:
        return f"{self.sequence:010d}.json"

    @classmethod
    def parse(cls, name: str, data: bytes) -> Record:
        """A record whose content matches its sha256; its signature is checked by `verify`."""
        try:
            document = json.loads(data)
            body = document["body"]
            record = cls(
                sequence=body["sequence"],
                action=body["action"],
                actor=body["actor"],
                timestamp=body["at"],
                details=body["details"],
                previous_sha256=body["previous_sha256"],
                sha256=document["sha256"],
                signature=document.get("signature"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise AuditError(f"record {name} is not a valid audit record: {error}") from None
        wrong = [
            field
            for field, value, kind in (
                ("sequence", record.sequence, int),
                ("action", record.action, str),
                ("actor", record.actor, str),
                ("at", record.timestamp, str),
                ("details", record.details, dict),
                ("previous_sha256", record.previous_sha256, str),
                ("sha256", record.sha256, str),
                ("signature", record.signature, (dict, type(None))),
            )
            if not isinstance(value, kind) or isinstance(value, bool)
        ]
        if wrong:
            raise AuditError(f"record {name} is not a valid audit record: {', '.join(wrong)}")
        if sha256(canonical(body)) != record.sha256:
            raise AuditError(f"record {name} was modified: its content does not match its sha256")
        return record


def verify(records: list[Record], trust: Trust) -> None:
    """AuditError naming the first record that no key the project trusts signed for its action.

    Signature checks dominate reading a long log, and cryptography's run in parallel threads, so
    long runs of records are split over the machine's cores.
    """

    def first_failure(chunk: list[Record]) -> tuple[Record, str] | None:
        for record in chunk:
            try:
                trust.check_record(record.sequence, record.action, record.sha256, record.signature)
            except Untrusted as error:
                return record, str(error)
        return None

    if not records:
        return
    workers = min(os.cpu_count() or 1, len(records) // PARALLEL_FROM + 1)
    size = -(-len(records) // workers)
    chunks = [records[start : start + size] for start in range(0, len(records), size)]
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            failures = list(pool.map(first_failure, chunks))
    else:
        failures = [first_failure(chunk) for chunk in chunks]
    for failure in failures:
        if failure:
            raise AuditError(f"record {failure[0].name} {failure[1]}")


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

    def __init__(
        self, fs: fsspec.AbstractFileSystem, root: str, trust: Trust, genesis: str
    ) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.trust = trust
        self.genesis = genesis
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
        new: list[Record] = []
        for name in names[known:]:
            record = self._read(name)
            self._check_link(name, record, new[-1] if new else None)
            new.append(record)
        verify(new, self.trust)
        self._records.extend(new)
        return list(self._records)

    def _read(self, name: str) -> Record:
        path = f"{self.root}/{name}"
        try:
            if storage.is_local(self.fs):
                with open(path, "rb") as handle:  # fsspec's layers cost more than the read
                    return Record.parse(name, handle.read())
            return Record.parse(name, self.fs.cat_file(path))
        except FileNotFoundError:
            raise AuditError(f"record {name} disappeared while the log was read") from None

    def _check_link(self, name: str, record: Record, before: Record | None) -> None:
        before = before or (self._records[-1] if self._records else None)
        expected_sequence = before.sequence + 1 if before else 1
        previous = before.sha256 if before else self.genesis
        if not before and self.trust.unsigned_until and record.previous_sha256 == UNNAMED_GENESIS:
            previous = UNNAMED_GENESIS  # a log begun before signing
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
            previous = records[-1].sha256 if records else self.genesis
            sequence = len(records) + 1
            data = encode(sequence, action, actor, details, previous, signer)
            record = Record.parse(self.path(sequence), data)
            verify([record], self.trust)  # a record readers would refuse is never written
            if storage.create(self.fs, self.path(sequence), data):
                self._records.append(record)
                return record
            # Another writer took this number: back off a little, then read its record.
            time.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))
        raise AuditError(f"could not append to {self.root} after {MAX_ATTEMPTS} attempts")
