"""A bundle run as a program: `python BUNDLE.zip` serves the model in it, with the code in it.

Only the standard library is imported before the service starts, so `--environment DIR` works
with any Python 3: it writes the bundle's pyproject.toml and lock file, from which the
environment the model was built in is made again.

The bundle checks its own manifest's signature against the keys named by `--trusted-keys` (the
project's trust/keys.json). That catches a damaged or re-signed bundle, not a malicious one: a
program runs its own code, so check a bundle from elsewhere first, with the project's
`ops.cli serve --bundle` or `score --bundle`, which verify before anything in it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from pathlib import Path

from .settings import LOCK_FILES, add_server_options

ENVIRONMENT_FILES = ("pyproject.toml", "environment.yml", *LOCK_FILES)
# For each lock: how to install it (for uv, what the model needs at run time only, as in the
# Dockerfile), and the environment's Python.
INSTALL = {
    "uv.lock": ("uv sync --locked --no-install-project --no-default-groups", ".venv/bin/python"),
    "conda-lock.yml": (
        "uvx conda-lock@4.0.3 install --prefix .conda-env conda-lock.yml",
        ".conda-env/bin/python",
    ),
}


def main(bundle: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python {bundle}", description="Serve the model in this bundle over HTTP."
    )
    add_server_options(parser)
    parser.add_argument(
        "--environment",
        metavar="DIR",
        help="write the bundle's pyproject.toml and lock file into DIR, and say how to install",
    )
    parser.add_argument(
        "--trusted-keys",
        metavar="FILE",
        default=os.environ.get("LAB2PROD_TRUSTED_KEYS"),
        help="the project's trust/keys.json: the publish keys this bundle may be signed by",
    )
    parser.add_argument(
        "--trust-unsigned",
        action="store_true",
        help="serve without checking the signature (local experiments only)",
    )
    args = parser.parse_args(argv)
    if args.environment:
        return write_environment(bundle, Path(args.environment))
    if args.trusted_keys:
        os.environ["LAB2PROD_TRUSTED_KEYS"] = str(Path(args.trusted_keys).resolve())
    try:
        from . import serve
        from .bundle import BundleError, verified
        from .signing import Trust, Untrusted, load_trust
    except ImportError as error:
        print(
            f"this Python lacks the bundle's environment ({error}); make it with "
            f"`python {bundle} --environment DIR` and run the bundle with DIR's Python",
            file=sys.stderr,
        )
        return 2
    if not (args.trusted_keys or args.trust_unsigned):
        print(
            "name the keys this bundle must be signed by: --trusted-keys trust/keys.json (or "
            "LAB2PROD_TRUSTED_KEYS); --trust-unsigned skips the check, for local experiments",
            file=sys.stderr,
        )
        return 2
    try:  # here, with a message, rather than in every worker
        trust = load_trust(Path(args.trusted_keys)) if args.trusted_keys else Trust()
        verified(Path(bundle).read_bytes(), trust, trust_unsigned=args.trust_unsigned)
    except (BundleError, Untrusted) as error:
        print(f"not serving {bundle}: {error}", file=sys.stderr)
        return 2
    serve.run(args, stage="", bundle=bundle, poll_seconds=0)
    return 0


def write_environment(bundle: str, target: Path) -> int:
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(bundle) as archive:
        names = [name for name in ENVIRONMENT_FILES if name in archive.namelist()]
        for name in names:
            (target / name).write_bytes(archive.read(name))
    install, python = next(INSTALL[name] for name in names if name in INSTALL)
    print(
        f"wrote {', '.join(names)} to {target}; now run `{install}` there and serve with "
        f"`{target / python} {bundle} --trusted-keys trust/keys.json` (the project's keys)"
    )
    return 0
