"""Atomic writes, the one idiom every output of videogen uses: a file or a folder appears whole or not at all.

A file is written to a uniquely named hidden temporary file in the target's folder (so the final rename stays on
one file system) and published onto the target only when it is complete (`write_atomic`; `VideoWriter` streams
through `reserve_temp` and `publish`). A folder -- a model folder, a training checkpoint -- is filled in a hidden
staging folder beside it and renamed into place (`staged_folder`). Without ``overwrite`` an existing target is
refused before any work (`check_target`).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def write_atomic(path: Path, write: Callable[[Path], object], *, overwrite: bool = True) -> Path:
    """Create (or, with overwrite, replace) ``path`` whole: ``write(tmp)`` fills a temporary file beside it."""
    path = Path(path)
    tmp = reserve_temp(path)
    try:
        write(tmp)
        publish(tmp, path, overwrite)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextmanager
def staged_folder(folder: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden staging folder beside ``folder``; when the block ends without error it replaces ``folder``.

    An existing ``folder`` is refused before any work unless ``overwrite``. On an error (or a kill) the
    target is left as it was; the staging folder is removed (or, after a kill, left hidden as ``.NAME.*``).
    """
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise InputError(f"{folder} already exists (pass overwrite=True to replace it)")
    if not folder.parent.is_dir():
        raise InputError(f"folder {folder.parent} does not exist")
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's folder is private; the result is an ordinary folder
        yield staging
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
