"""An offline conda for tests: conda-lock runs its real code against a local channel.

    url = build_channel(tmp / "channel")       # real linux-64 packages, converted from wheels
    mapping = write_mapping(tmp / "mapping.yml", url)
    conda = install_standin(tmp / "bin")       # `conda` backed by py-rattler
    env = {**os.environ, **offline_env(tmp)}
    conda-lock lock --conda <conda> -c <url> --pypi_to_conda_lookup_file <mapping> ...
    conda-lock install --conda <conda> -p <prefix> conda-lock.yml

The channel holds the given conda dependencies (a generated project's environment.yml)
and their dependency closure, at the versions pip resolves
on this machine for linux. Pure-Python wheels become `noarch: python` packages;
binary ones become linux-64 packages plus dependency-only placeholders for the
other PLATFORMS (lockable, not installable). `python` is venv-style: a symlink to
a local interpreter of that version next to a pyvenv.cfg.
"""

from __future__ import annotations

import asyncio
import configparser
import email.parser
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

from conda_package_handling import api as cph
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from rattler.index import index_fs

# PyPI name -> conda name where conda-forge differs (its `tzdata` is the zoneinfo
# database; the PyPI package is `python-tzdata`).
CONDA_NAMES = {"tzdata": "python-tzdata"}
# Environment markers per conda platform, for wheels' Requires-Dist.
PLATFORMS = {
    "linux-64": {
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": "x86_64",
    },
    "osx-arm64": {
        "sys_platform": "darwin",
        "platform_system": "Darwin",
        "os_name": "posix",
        "platform_machine": "arm64",
    },
    "win-64": {
        "sys_platform": "win32",
        "platform_system": "Windows",
        "os_name": "nt",
        "platform_machine": "AMD64",
    },
}
PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"  # conda's prefix placeholder
STANDIN = Path(__file__).with_name("conda_standin.py")


def build_channel(
    destination: Path, conda_requirements: list[str], python_version: str = "3.11"
) -> str:
    """Build and index a conda channel in `destination` holding `python`, `pip` and the
    requirements (conda match specs such as `numpy>=2.3,<3`); return its file:// URL."""
    destination = Path(destination).absolute()
    interpreter, full_version = _interpreter(python_version)
    markers = {
        "python_version": python_version,
        "python_full_version": full_version,
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    requirements = ["pip", *conda_requirements]
    with tempfile.TemporaryDirectory() as tmp:
        wheels = Path(tmp)
        while True:
            subprocess.run(
                [
                    *_pip(),
                    "download",
                    "--quiet",
                    "--only-binary=:all:",
                    "--python-version",
                    python_version,
                    "--dest",
                    tmp,
                    *requirements,
                ],
                check=True,
            )
            # pip resolves for this machine only; dependencies that other platforms
            # add (pandas needs tzdata on Windows) join the next round.
            have = {canonicalize_name(w.name.split("-")[0]) for w in wheels.glob("*.whl")}
            missing = {
                f"{r.name}{r.specifier}"
                for w in wheels.glob("*.whl")
                for reqs in _requirements(w, markers).values()
                for r in reqs
                if canonicalize_name(r.name) not in have
            }
            if not missing:
                break
            requirements += sorted(missing)
        for wheel in wheels.glob("*.whl"):
            _convert_wheel(wheel, destination, python_version, markers)
    _python_packages(destination, interpreter, full_version)
    asyncio.run(index_fs(destination, write_zst=False, write_shards=False, force=True))
    shutil.rmtree(destination / ".tmp", ignore_errors=True)  # indexer leftover
    return destination.as_uri()


def write_mapping(path: Path, channel: str | Path | None = None) -> Path:
    """Write conda-lock's --pypi_to_conda_lookup_file (grayskull format).

    conda-lock maps names it does not find to themselves, so CONDA_NAMES alone is
    enough; with `channel` (URL or path), every package in it gets an entry."""
    names = {name: name for name in CONDA_NAMES.values()}
    if channel:
        root = Path(str(channel).removeprefix("file://"))
        for repodata in root.glob("*/repodata.json"):
            names.update((r["name"], r["name"]) for r in _records(repodata))
    reverse = {conda: pypi for pypi, conda in CONDA_NAMES.items()}
    mapping = {
        reverse.get(conda, conda): {
            "pypi_name": reverse.get(conda, conda),
            "conda_name": conda,
            "conda_forge": conda,
        }
        for conda in names
        if conda != "python" and not conda.startswith("__")
    }
    path = Path(path)
    path.write_text(json.dumps(mapping, indent=1, sort_keys=True))  # JSON is YAML
    return path


def install_standin(bin_dir: Path) -> Path:
    """Write `bin_dir/conda`, running conda_standin.py with this interpreter (it
    needs py-rattler). Named `conda`: conda-lock switches to micromamba-specific
    commands for anything that answers `--version` like micromamba."""
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "conda"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    exe.chmod(0o755)
    return exe


def offline_env(work: Path) -> dict[str, str]:
    """Variables that keep conda-lock, its vendored poetry, pip and the stand-in
    inside `work` (caches, package cache, named envs) instead of $HOME."""
    work = Path(work).absolute()
    return {
        "CONDA_PKGS_DIRS": str(work / "pkgs"),
        "CONDA_ENVS_PATH": str(work / "envs"),
        "XDG_CACHE_HOME": str(work / "cache"),  # conda-lock, poetry, py-rattler
        "PIP_CACHE_DIR": str(work / "cache" / "pip"),
        "XDG_CONFIG_HOME": str(work / "config"),  # and no user config leaks in
        "XDG_DATA_HOME": str(work / "data"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }


def _interpreter(version: str) -> tuple[str, str]:
    """Real path and full version of a local CPython `version` (e.g. "3.11")."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return os.path.realpath(sys.executable), platform.python_version()
    exe = shutil.which(f"python{version}")
    query = "import os, platform, sys; print(os.path.realpath(sys.executable))"
    query += "; print(platform.python_version())"
    out = exe and subprocess.run([exe, "-c", query], capture_output=True, text=True)
    if not out or out.returncode:
        raise RuntimeError(f"no usable python{version} on PATH for the channel's python package")
    path, full = out.stdout.split()
    return path, full


def _pip() -> list[str]:
    """pip of this interpreter, or the wheel ensurepip bundles (uv venvs have no pip)."""
    if importlib.util.find_spec("pip"):
        return [sys.executable, "-m", "pip"]
    import ensurepip

    wheel = next((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
    return [sys.executable, str(wheel / "pip")]


def _conda_name(name: str) -> str:
    name = canonicalize_name(name)
    return CONDA_NAMES.get(name, name)


def _conda_spec(name: str, specifier: SpecifierSet) -> str:
    # PEP 440 and conda agree on these operators; `===` has no conda form.
    parts = sorted(str(s).replace("===", "==") for s in specifier)
    return f"{name} {','.join(parts)}" if parts else name


def _read_wheel(zf: zipfile.ZipFile) -> tuple[str, Message]:
    """The wheel's .dist-info directory and parsed METADATA."""
    info_dir = next(n.split("/")[0] for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    return info_dir, email.parser.BytesParser().parsebytes(zf.read(f"{info_dir}/METADATA"), True)


def _requirements(wheel: Path, markers: dict[str, str]) -> dict[str, list[Requirement]]:
    """Requires-Dist per platform: markers evaluated, extras' requirements dropped."""
    with zipfile.ZipFile(wheel) as zf:
        meta = _read_wheel(zf)[1]
    reqs = [Requirement(line) for line in meta.get_all("Requires-Dist") or []]
    return {
        subdir: [
            r
            for r in reqs
            if r.marker is None or r.marker.evaluate({**markers, **env, "extra": ""})
        ]
        for subdir, env in PLATFORMS.items()
    }


def _convert_wheel(wheel: Path, channel: Path, py: str, markers: dict[str, str]) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        info_dir, meta = _read_wheel(zf)
        data_dir = info_dir.removesuffix(".dist-info") + ".data"
        is_pure = b"Root-Is-Purelib: true" in zf.read(f"{info_dir}/WHEEL")
        entry_points = configparser.ConfigParser(delimiters=("=",), interpolation=None)
        entry_points.optionxform = str  # script names are case-sensitive
        if f"{info_dir}/entry_points.txt" in names:
            entry_points.read_string(zf.read(f"{info_dir}/entry_points.txt").decode())
        scripts = {
            name: target.split("[")[0].strip()
            for section in ("console_scripts", "gui_scripts")
            if entry_points.has_section(section)
            for name, target in entry_points.items(section)
        }

        name, version = _conda_name(meta["Name"]), str(Version(meta["Version"]))
        depends = {
            sd: sorted(_conda_spec(_conda_name(r.name), r.specifier) for r in reqs)
            for sd, reqs in _requirements(wheel, markers).items()
        }
        other_data = [
            n
            for n in names
            if n.startswith(f"{data_dir}/")
            and not n.startswith((f"{data_dir}/purelib/", f"{data_dir}/platlib/"))
        ]
        # noarch: python only when one package fits every platform.
        noarch = is_pure and not other_data and len({tuple(d) for d in depends.values()}) == 1
        site = "site-packages" if noarch else f"lib/python{py}/site-packages"

        def files() -> Iterator[tuple[str, bytes | str]]:
            for n in names:
                data = b"conda\n" if n == f"{info_dir}/INSTALLER" else zf.read(n)
                kind, _, rest = n.removeprefix(f"{data_dir}/").partition("/")
                if not n.startswith(f"{data_dir}/"):
                    yield f"{site}/{n}", data
                elif kind in ("purelib", "platlib"):
                    yield f"{site}/{rest}", data
                elif kind == "scripts":
                    if data.startswith(b"#!python"):
                        data = f"#!{PLACEHOLDER}/bin/python".encode() + data[len(b"#!python") :]
                    yield f"bin/{rest}", data
                elif kind == "headers":
                    yield f"include/python{py}/{meta['Name']}/{rest}", data
                else:  # data
                    yield rest, data
            if not noarch:
                for script, target in scripts.items():
                    module, _, func = target.partition(":")
                    yield (
                        f"bin/{script}",
                        (
                            f"#!{PLACEHOLDER}/bin/python\nimport sys\n"
                            f"from {module} import {func.split('.')[0]}\n"
                            f"sys.exit({func}())\n"
                        ).encode(),
                    )

        base = {
            "name": name,
            "version": version,
            "build_number": 0,
            "license": meta.get("License-Expression") or "",
        }
        if noarch:
            python = _conda_spec("python", SpecifierSet(meta.get("Requires-Python") or ""))
            link = {
                "noarch": {
                    "type": "python",
                    "entry_points": [f"{s} = {t}" for s, t in scripts.items()],
                },
                "package_metadata_version": 1,
            }
            index = {
                **base,
                "build": "pyh_0",
                "noarch": "python",
                "subdir": "noarch",
                "depends": sorted([*depends["linux-64"], python]),
            }
            _write_package(channel / "noarch", index, files(), link)
            return
        abi = py.replace(".", "")
        python = f"python >={py},<{py.split('.')[0]}.{int(py.split('.')[1]) + 1}.0a0"
        for subdir in PLATFORMS:
            index = {
                **base,
                "build": f"py{abi}_0",
                "subdir": subdir,
                "depends": sorted([*depends[subdir], python]),
            }
            # Placeholders for other platforms: same name, version, dependencies; no files.
            content = files() if subdir == "linux-64" else iter(())
            _write_package(channel / subdir, index, content)


def _python_packages(channel: Path, interpreter: str, full_version: str) -> None:
    py = ".".join(full_version.split(".")[:2])
    # A symlinked interpreter next to pyvenv.cfg is what `python -m venv` makes:
    # sys.prefix is the environment, the standard library comes from `home`.
    linux = {
        f"bin/python{py}": interpreter,
        "bin/python3": f"python{py}",
        "bin/python": f"python{py}",
        "pyvenv.cfg": (
            f"home = {os.path.dirname(interpreter)}\n"
            "include-system-site-packages = false\n"
            f"version = {full_version}\n"
        ).encode(),
    }
    for subdir in PLATFORMS:
        index = {
            "name": "python",
            "version": full_version,
            "build": "h_0",
            "build_number": 0,
            "subdir": subdir,
            "license": "Python-2.0",
            "depends": ["__glibc >=2.17"] if subdir == "linux-64" else [],
        }
        _write_package(channel / subdir, index, iter(linux.items() if subdir == "linux-64" else ()))


def _write_package(
    subdir_dir: Path,
    index: dict,
    files: Iterator[tuple[str, bytes | str]],
    link: dict | None = None,
) -> None:
    """Write name-version-build.conda; a `str` file content means "symlink to"."""
    if index["subdir"] != "noarch":
        index["platform"], index["arch"] = index["subdir"].split("-")
    with tempfile.TemporaryDirectory() as tmp:
        root, paths = Path(tmp), []
        for rel, content in files:
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                target.symlink_to(content)
                paths.append({"_path": rel, "path_type": "softlink"})
                continue
            target.write_bytes(content)
            entry = {
                "_path": rel,
                "path_type": "hardlink",
                "size_in_bytes": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
            }
            if rel.startswith("bin/"):
                target.chmod(0o755)
                if PLACEHOLDER.encode() in content:
                    entry.update(prefix_placeholder=PLACEHOLDER, file_mode="text")
            paths.append(entry)
        info = {"info/index.json": index, "info/paths.json": {"paths": paths, "paths_version": 1}}
        if link:
            info["info/link.json"] = link
        (root / "info").mkdir()
        for rel, data in info.items():
            (root / rel).write_text(json.dumps(data, indent=1, sort_keys=True))
        subdir_dir.mkdir(parents=True, exist_ok=True)
        fn = f"{index['name']}-{index['version']}-{index['build']}.conda"
        # Level 1: the channel is rebuilt per test session, so speed beats size.
        cph.create(
            tmp,
            [*info, *(p["_path"] for p in paths)],
            fn,
            out_folder=str(subdir_dir),
            compression_level=1,
        )


def _records(repodata: Path) -> list[dict]:
    data = json.loads(repodata.read_text())
    return [*data.get("packages", {}).values(), *data.get("packages.conda", {}).values()]
