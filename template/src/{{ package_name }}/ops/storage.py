"""Whole-object writes on any fsspec filesystem: a reader sees all of an object or nothing.

Local disks write a temporary file and then link or rename it into place; object stores PUT the
object in one request. `create` never replaces an existing object: an exclusive hard link on
disk, a conditional PUT (If-None-Match: *) on S3.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def _write_temporary(path: str, data: bytes) -> str:
    # The writer's PID in the name tells a later run whether the writer is still alive.
    temporary = f"{os.path.dirname(path)}/.{os.getpid()}-{uuid.uuid4().hex}.partial"
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


def remove_leftovers(directory: Path) -> list[Path]:
    """Remove the temporary files in `directory` whose writer was killed; the ones removed."""
    removed = []
    for temporary in directory.glob(".*-*.partial"):
        pid = temporary.name[1:].split("-", 1)[0]
        if pid.isdigit() and not alive(int(pid)):
            temporary.unlink(missing_ok=True)
            removed.append(temporary)
    return removed
