"""Create a file atomically next to its target, refusing to replace an existing one unless asked.

The writer reserves a uniquely named hidden temporary file in the target's folder (so the final rename stays on
one file system), fills it, and publishes it onto the target only when it is complete; `VideoWriter` is the user.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

from videogen.errors import InputError


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse, before any work, a target whose folder is missing, that is a folder, or that exists."""
    if not path.parent.is_dir():
        raise InputError(f"{path}: the output folder {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    if path.exists() and not overwrite:
        raise InputError(f"{path}: file exists; refusing to overwrite it (pass --overwrite, or overwrite=True, "
                         "to replace it)")


def reserve_temp(path: Path) -> Path:
    """Create an empty, uniquely named temporary file next to `path`, keeping its extension for the muxer."""
    while True:
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        except OSError as e:
            raise InputError(f"{path}: cannot write to {path.parent} ({e.strerror})") from None
        return tmp


def publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished file onto the target. Without overwrite, a hard link makes "create only if absent"
    atomic (a file that appeared meanwhile is kept); file systems without hard links get a check + rename."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise InputError(f"{path}: file exists; refusing to overwrite it (pass --overwrite, or overwrite=True, "
                         "to replace it)") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        if path.exists():
            raise InputError(f"{path}: file exists; refusing to overwrite it (pass --overwrite, or overwrite=True, "
                         "to replace it)") from None
        os.replace(tmp, path)
        return
    tmp.unlink()
