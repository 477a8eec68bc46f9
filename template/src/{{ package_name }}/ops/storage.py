"""Whole-object writes on any fsspec filesystem: a reader sees all of an object or nothing.

Local disks write a temporary file and then link or rename it into place; object stores PUT the
object in one request. `create` never replaces an existing object: an exclusive hard link on
disk, a conditional PUT (If-None-Match: *) on S3.
"""

from __future__ import annotations

import glob
import os
import re
import socket
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

HOST = socket.gethostname()


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def temporary_path(path: str | Path) -> Path:
    """A hidden name beside `path` to write it under. The writer's machine and PID in it tell a
    later run whether the writer still runs (`remove_leftovers`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")


def _write_temporary(path: str, data: bytes) -> Path:
    temporary = temporary_path(path)
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return temporary


def create(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Write path only if it does not exist yet; False when another writer got there first."""
    if is_local(fs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = _write_temporary(path, data)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(temporary)
        return True
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    except OSError as error:
        # S3 answers 409 while another conditional write of the same key is in flight.
        if "ConditionalRequestConflict" in str(error):
            return False
        raise
    return True


def put(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write or replace path in one step."""
    if is_local(fs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.replace(_write_temporary(path, data), path)
    else:
        fs.pipe_file(path, data)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def leftovers(directory: Path, name: str = "") -> list[Path]:
    """The temporaries in `directory` (of the file `name`, or of any) written on this machine by
    a process that no longer runs: killed outright (SIGKILL, out of memory, power loss). A run
    still going keeps its own, whatever their age; those of other machines sharing the folder
    stay, as their processes cannot be checked from here."""
    ours = re.compile(
        rf"\.{re.escape(name) if name else '.+'}\.{re.escape(HOST)}\.(\d+)\.[0-9a-f]+\.partial"
    )
    return [
        candidate
        for candidate in directory.glob(f".{glob.escape(name)}*.partial")
        if (match := ours.fullmatch(candidate.name)) and not alive(int(match[1]))
    ]


def remove_leftovers(directory: Path, name: str = "") -> list[Path]:
    """Remove the `leftovers` of killed runs in `directory`; the ones removed."""
    removed = leftovers(directory, name)
    for candidate in removed:
        candidate.unlink(missing_ok=True)
    return removed
