"""Who may write the registry: Ed25519 keys by role, and their signatures on records and bundles.

A role's private key is held where its action happens: CI's publish key signs `published` records
and the manifests of the bundles it builds; the protected deploy environment's key signs
`promoted` and `rolled_back`. Records that change no stage (`scored`, `reproduced`, `monitored`,
`collected`, `keys_changed`) may be signed by any trusted key.

Trust lives in the project, not in the registry: `trust/keys.json` lists the public keys, their
role, and for a retired key the last record it could sign. Trusting a new key is a reviewed,
committed change; anyone who can only write to the registry cannot add one. A private key comes
from `LAB2PROD_<ROLE>_KEY` (a PEM text: CI secrets) or, on a laptop, `.keys/<role>.pem`, which
`nox -s keys` writes and git ignores.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ROLES = ("publish", "deploy")
ROLE_OF_ACTION = {"published": "publish", "promoted": "deploy", "rolled_back": "deploy"}
KEYS_FILE = Path("trust") / "keys.json"
PRIVATE_DIR = Path(".keys")


class Untrusted(Exception):
    """A signature is missing, invalid, or made by a key that may not sign this."""


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def private_key_variable(role: str) -> str:
    return f"LAB2PROD_{role.upper()}_KEY"


@dataclass(frozen=True)
class TrustedKey:
    id: str
    role: str
    public: Ed25519PublicKey
    retired_after: int | None = None  # the last record sequence this key could sign

    def to_json(self) -> dict[str, Any]:
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        entry = {"id": self.id, "role": self.role, "ed25519": base64.b64encode(raw).decode()}
        if self.retired_after is not None:
            entry["retired_after"] = self.retired_after
        return entry


@dataclass
class Trust:
    """The keys a project trusts. `unsigned_until`: records up to this number predate signing."""

    keys: dict[str, TrustedKey] = field(default_factory=dict)
    unsigned_until: int = 0
    source: str = str(KEYS_FILE)  # the file the keys came from, for messages

    def check_record(self, sequence: int, action: str, digest: str, signature: Any) -> None:
        """Raise Untrusted unless a trusted key of the right role signed this record's digest."""
        if signature is None and sequence <= self.unsigned_until:
            return
        key = self._signer(signature, digest.encode())
        wanted = ROLE_OF_ACTION.get(action)
        if wanted and key.role != wanted:
            raise Untrusted(
                f"is signed by {key.role} key {key.id}, but only a {wanted} key may sign {action}"
            )
        if key.retired_after is not None and sequence > key.retired_after:
            raise Untrusted(
                f"is signed by key {key.id}, retired after record {key.retired_after:010d}.json"
            )

    def check_manifest(self, manifest: bytes, signature: Any, *, retired_ok: bool) -> str:
        """The id of the publish key that signed a bundle's manifest; Untrusted otherwise."""
        key = self._signer(signature, manifest)
        if key.role != "publish":
            raise Untrusted(f"its manifest is signed by {key.role} key {key.id}, not a publish key")
        if key.retired_after is not None and not retired_ok:
            raise Untrusted(f"its manifest is signed by key {key.id}, which has been retired")
        return key.id

    def _signer(self, signature: Any, message: bytes) -> TrustedKey:
        if not isinstance(signature, dict) or not all(
            isinstance(signature.get(field), str) for field in ("key", "ed25519")
        ):
            raise Untrusted("is not signed")
        key = self.keys.get(signature["key"])
        if key is None:
            raise Untrusted(
                f"is signed by key {signature['key']}, which {self.source} does not trust"
            )
        try:
            key.public.verify(base64.b64decode(signature["ed25519"], validate=True), message)
        except (InvalidSignature, ValueError):
            raise Untrusted(f"has a signature that does not verify with key {key.id}") from None
        return key

    def active(self, role: str) -> list[TrustedKey]:
        return [key for key in self.keys.values() if key.role == role and key.retired_after is None]

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"keys": [key.to_json() for key in self.keys.values()]}
        if self.unsigned_until:
            document["unsigned_until"] = self.unsigned_until
        return document


def load_trust(path: Path) -> Trust:
    """The trusted keys in `path`; an absent file trusts nothing, so every signature fails."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Trust(source=f"{path} (missing)")
    except ValueError as error:
        raise Untrusted(f"{path} is not valid JSON: {error}") from None
    try:
        trust = Trust(unsigned_until=int(document.get("unsigned_until", 0)), source=str(path))
        for entry in document["keys"]:
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(entry["ed25519"]))
            if entry["role"] not in ROLES or entry["id"] != key_id(public):
                raise ValueError(f"key {entry['id']}: unknown role or an id that is not its hash")
            retired_after = entry.get("retired_after")
            trust.keys[entry["id"]] = TrustedKey(
                entry["id"],
                entry["role"],
                public,
                None if retired_after is None else int(retired_after),
            )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise Untrusted(f"{path} is not a valid list of trusted keys: {error}") from None
    return trust


def project_trust(project_dir: Path) -> Trust:
    """The keys a project trusts: its committed trust/keys.json."""
    return load_trust(project_dir / KEYS_FILE)


def save_trust(path: Path, trust: Trust) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    temporary.write_text(json.dumps(trust.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


@dataclass(frozen=True)
class Signer:
    """A private key and the id of its public half."""

    private: Ed25519PrivateKey
    id: str

    @classmethod
    def of(cls, private: Ed25519PrivateKey) -> Signer:
        return cls(private, key_id(private.public_key()))

    @classmethod
    def generate(cls) -> Signer:
        return cls.of(Ed25519PrivateKey.generate())

    def sign(self, message: bytes) -> dict[str, str]:
        return {"key": self.id, "ed25519": base64.b64encode(self.private.sign(message)).decode()}

    def pem(self) -> str:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def secret(self) -> str:
        """The private key on one line (base64), as CI secrets and masked variables want it."""
        raw = self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return base64.b64encode(raw).decode()


def private_key(role: str, project_dir: Path) -> Signer | None:
    """The role's private key held here: the CI secret first, then the laptop's key file."""
    text = os.environ.get(private_key_variable(role))
    source = private_key_variable(role)
    if not text:
        path = project_dir / PRIVATE_DIR / f"{role}.pem"
        if not path.is_file():
            return None
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        if text.lstrip().startswith("-----BEGIN"):
            private = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            raw = base64.b64decode(text.strip(), validate=True)
            private = Ed25519PrivateKey.from_private_bytes(raw)
    except ValueError:
        raise Untrusted(f"{source} is not a private key (PEM, or one line of base64)") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise Untrusted(f"{source} is not an Ed25519 key")
    return Signer.of(private)


def signer_for(action: str, project_dir: Path, trust: Trust) -> Signer:
    """The key that signs `action` here: its role's key, or for other actions any trusted one."""
    wanted = ROLE_OF_ACTION.get(action)
    held = [(role, signer) for role in ((wanted,) if wanted else ROLES)
            if (signer := private_key(role, project_dir))]  # fmt: skip
    for _, signer in held:
        key = trust.keys.get(signer.id)
        if key is not None and key.retired_after is None:
            return signer
    if held:
        role, signer = held[0]
        raise Untrusted(
            f"the {role} key here ({signer.id}) is not an active key in {KEYS_FILE}: commit "
            f"the trust file that lists it, or use the current key"
        )
    raise Untrusted(
        f"{action} needs a {wanted or 'publish or deploy'} key and none is here: set "
        f"{private_key_variable(wanted or 'publish')} to the key your team keeps for it (a CI "
        f"secret); on a laptop of your own, `nox -s keys -- new --role {wanted or 'publish'}` "
        "makes one (and retires the role's current key)"
    )
