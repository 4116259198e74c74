"""Files the catalog writes: atomically (a temporary file renamed into place, with the
permissions a plain open() would give), and the error that names a folder it cannot write."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from studio.core.config import setting
from studio.core.errors import CatalogError

TMP_PREFIX = ".tmp-"
# What a full disk, a used-up quota or a file-size limit (ulimit -f) answers a write with.
FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _file_mode() -> int:
    # The permissions a plain open() would give, as for the catalog itself (mkstemp uses 0600).
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` so that `path` is either absent, old, or complete, never partial."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # a failed write names no file: name the one being written
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def unwritable_error(folder: Path, exc: Exception) -> CatalogError:
    """The error for a data folder the catalog cannot write: full, or not writable."""
    reason = getattr(exc, "strerror", None) or str(exc)
    if getattr(exc, "errno", None) in FULL_DISK_ERRNOS:
        return CatalogError(
            f"The data folder {folder} is full ({reason}). Free some space there, or set "
            f"{setting('data_dir')} to a folder on another disk."
        )
    return CatalogError(
        f"The data folder {folder} cannot be written ({reason}). Set {setting('data_dir')} to a "
        "folder you can write, or fix the folder's permissions."
    )
