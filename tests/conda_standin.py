"""A `conda` stand-in backed by py-rattler, enough for conda-lock 4.0.3 on local channels.

    conda --version | info --json | config --json list pkgs_dirs
    conda create|install|update -p P --dry-run --json [--override-channels] -c URL... SPEC...
    conda list [--no-pip] -p P --json                      (lock --update)
    conda create -p P|-n N --file EXPLICIT_LOCK_OR_SPECS [-c URL...] [--yes --copy ...]
    conda run -p P|-n N CMD ARGS...

Only file:// channels: repodata is read straight from disk, nothing is fetched.
The target platform is CONDA_SUBDIR (conda-lock sets it per platform); virtual
packages come from conda-lock's fake virtual-package channel (a channel whose
records are all `__*`). Package cache: CONDA_PKGS_DIRS; named envs: CONDA_ENVS_PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import rattler
from rattler import (
    BuildString,
    Channel,
    GenericVirtualPackage,
    PackageName,
    RepoData,
    SparseRepoData,
    Version,
)

CONDA_VERSION = "24.11.3"  # what --version and info report
DEFAULT_ROOT = Path(tempfile.gettempdir(), "conda-standin")  # never $HOME


def host_subdir() -> str:
    return str(rattler.Platform.current())


def pkgs_dirs() -> list[str]:
    env = os.environ.get("CONDA_PKGS_DIRS")
    return env.split(",") if env else [str(DEFAULT_ROOT / "pkgs")]


def resolve_prefix(args: argparse.Namespace) -> Path:
    if args.prefix:
        return Path(args.prefix).absolute()
    envs = os.environ.get("CONDA_ENVS_PATH", str(DEFAULT_ROOT / "envs"))
    return Path(envs.split(os.pathsep)[0]) / args.name


def channel_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.scheme not in ("", "file"):
        raise SystemExit(f"conda stand-in: only local channels are supported, got {url}")
    return Path(unquote(parts.path))


def load_sources(channels: list[str], subdir: str) -> tuple[list, list]:
    """SparseRepoData per channel and subdir, plus the virtual packages found."""
    sources, virtual = [], []
    for url in channels:
        for sd in (subdir, "noarch"):
            path = channel_path(url) / sd / "repodata.json"
            if not path.exists():
                continue
            data = json.loads(path.read_text())
            records = [*data.get("packages", {}).values(), *data.get("packages.conda", {}).values()]
            if records and all(r["name"].startswith("__") for r in records):
                virtual += [
                    GenericVirtualPackage(
                        PackageName(r["name"]), Version(r["version"]), BuildString(r["build"])
                    )
                    for r in records
                    if sd == subdir
                ]
            elif records:
                sources.append(SparseRepoData(Channel(url.rstrip("/")), sd, path))
    return sources, virtual


def solve(specs: list[str], channels: list[str], subdir: str, locked: list = ()) -> list:
    sources, virtual = load_sources(channels, subdir)
    if not virtual and subdir == host_subdir():
        virtual = rattler.VirtualPackage.detect()
    return asyncio.run(
        rattler.solve_with_sparse_repodata(
            specs, sources, locked_packages=list(locked), virtual_packages=virtual
        )
    )


def records_for_urls(urls: list[str]) -> list:
    """Look explicit package URLs up in the repodata.json next to them."""
    by_url = {}
    for subdir_url in sorted({u.rsplit("/", 1)[0] for u in urls}):
        channel_url = subdir_url.rsplit("/", 1)[0]
        repodata = RepoData.from_path(channel_path(subdir_url) / "repodata.json")
        by_url.update((r.url, r) for r in repodata.into_repo_data(Channel(channel_url)))
    missing = [u for u in urls if u not in by_url]
    if missing:
        raise SystemExit(f"conda stand-in: not in any repodata.json: {missing}")
    return [by_url[u] for u in urls]


def fetch_action(rec) -> dict:
    action = json.loads(rec.to_json())
    action.update(url=rec.url, channel=rec.channel, fn=rec.file_name)
    return action


def link_action(meta: dict) -> dict:
    """LINK entry from a FETCH action or a conda-meta record (same keys)."""
    return {
        "name": meta["name"],
        "version": meta["version"],
        "build_string": meta["build"],
        "build_number": meta.get("build_number", 0),
        "channel": meta.get("channel", ""),
        "base_url": meta.get("channel", ""),
        "dist_name": meta["fn"].removesuffix(".tar.bz2").removesuffix(".conda"),
        "platform": meta.get("subdir", ""),
    }


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def installed_records(prefix: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((prefix / "conda-meta").glob("*.json"))]


def cmd_solve(args) -> int:
    if not args.dry_run:
        raise SystemExit("conda stand-in: solving specs is only supported with --dry-run")
    subdir = os.environ.get("CONDA_SUBDIR") or host_subdir()
    prefix = resolve_prefix(args)
    locked, unchanged, specs = [], set(), list(args.specs)
    if args.cmd in ("install", "update"):
        # `lock --update`: the prefix holds the previous solution as conda-meta
        # records; keep everything not named on the command line.
        named = {rattler.MatchSpec(s).name.normalized for s in specs}
        previous = [r for r in installed_records(prefix) if r["name"] not in named]
        locked = records_for_urls([r["url"] for r in previous])
        unchanged = {r["url"] for r in previous}
        specs += [r["name"] for r in previous]
    try:
        records = solve(specs, args.channels, subdir, locked)
    except Exception as exc:  # conda reports solver errors as JSON on stdout
        print_json({"success": False, "error": type(exc).__name__, "message": str(exc)})
        return 1
    fetch = sorted(
        (fetch_action(r) for r in records if r.url not in unchanged), key=lambda a: a["name"]
    )
    print_json(
        {
            "actions": {
                "FETCH": fetch,
                "LINK": [link_action(a) for a in fetch],
                "PREFIX": str(prefix),
            },
            "dry_run": True,
            "prefix": str(prefix),
            "success": True,
        }
    )
    return 0


def cmd_create_from_file(args) -> int:
    lines = [ln.strip() for ln in Path(args.file).read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if "@EXPLICIT" in lines:
        entries = [ln.split("#", 1) for ln in lines if ln != "@EXPLICIT"]
        records = records_for_urls([url for url, *_ in entries])
        for rec, (url, *digest) in zip(records, entries, strict=True):
            known = {h.hex() for h in (rec.md5, rec.sha256) if h}
            if digest and digest[0] not in known:
                raise SystemExit(f"conda stand-in: hash mismatch for {url}")
    else:
        records = solve(lines + args.specs, args.channels, host_subdir())
    prefix = resolve_prefix(args)
    asyncio.run(
        rattler.install(
            records, target_prefix=prefix, cache_dir=Path(pkgs_dirs()[0]), show_progress=False
        )
    )
    if not args.quiet:
        print(f"created {prefix} with {len(records)} packages")
    return 0


def cmd_run(args) -> int:
    prefix = resolve_prefix(args)
    env = dict(os.environ, CONDA_PREFIX=str(prefix))
    env["PATH"] = os.pathsep.join([str(prefix / "bin"), env.get("PATH", "")])
    sys.stdout.flush()
    os.execvpe(args.command[0], args.command, env)


def parser() -> argparse.ArgumentParser:
    target = argparse.ArgumentParser(add_help=False)
    group = target.add_mutually_exclusive_group()
    group.add_argument("-p", "--prefix")
    group.add_argument("-n", "--name")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true")
    common.add_argument("-q", "--quiet", action="store_true")
    common.add_argument("-y", "--yes", action="store_true")

    p = argparse.ArgumentParser(prog="conda")
    p.add_argument("--version", action="version", version=f"conda {CONDA_VERSION}")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("create", "install", "update"):
        s = sub.add_parser(name, parents=[target, common])
        s.add_argument("--dry-run", action="store_true")
        s.add_argument("--override-channels", action="store_true")  # always implied
        s.add_argument("-c", "--channel", dest="channels", action="append", default=[])
        s.add_argument("--file")
        s.add_argument("--copy", action="store_true")  # rattler picks the link type
        s.add_argument("specs", nargs="*")
    sub.add_parser("list", parents=[target, common]).add_argument("--no-pip", action="store_true")
    sub.add_parser("info", parents=[common])
    sub.add_parser("config", parents=[common]).add_argument("query", nargs="*")
    sub.add_parser("run", parents=[target]).add_argument("command", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.cmd in ("info", "config"):
        print_json(
            {"pkgs_dirs": pkgs_dirs(), "platform": host_subdir(), "conda_version": CONDA_VERSION}
        )
        return 0
    if args.cmd == "list":
        print_json([link_action(r) for r in installed_records(resolve_prefix(args))])
        return 0
    if args.cmd == "run":
        return cmd_run(args)
    return cmd_create_from_file(args) if args.file else cmd_solve(args)


if __name__ == "__main__":
    try:
        status = main(sys.argv[1:])
    except SystemExit as exc:
        status = exc.code
    if isinstance(status, str):
        print(status, file=sys.stderr)
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown: py-rattler 0.28's runtime threads crash it now and
    # then (SIGSEGV/SIGABRT in PyGILState_Release), after all output was written.
    os._exit(status or 0)
