"""Atomic file output: write to a temporary file in the same folder, then rename over the target.

A reader (or a resumed job) therefore sees either the old file or the complete new one, never half.
Every file gets the permissions that the user's umask gives a new file (0644 under umask 022), whoever
wrote the temporary file (Python, Pillow or the safetensors writer). Failures of the file system (a file
where a folder should be, no permission, a full disk) become one-line `OutputPathError`s.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import OutputPathError

# errno values that mean "this location cannot hold our output", as opposed to a bug in our code.
_LOCATION_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a path component is a file, not a folder",
    errno.EEXIST: "a file is in the way",
    errno.EISDIR: "a folder is in the way",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error",
}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode the umask gives a new regular file: 0o666 & ~umask."""
    return 0o666 & ~_umask()


def output_error(path: str | os.PathLike, exc: OSError, what: str = "write") -> OutputPathError:
    """A one-line OutputPathError for an OSError met while writing `path`."""
    reason = _LOCATION_ERRORS.get(exc.errno or -1) or (exc.strerror or type(exc).__name__)
    return OutputPathError(f"cannot {what} {path}: {reason}")


def check_dir(path: str | os.PathLike, flag: str = "the output folder") -> Path:
    """Check, without creating anything, that the output folder `path` can be created or written.

    Called before expensive work, so that a bad --out fails in a second rather than after training or
    sampling. Raises OutputPathError naming `flag` and the path: an existing file given as a folder, a
    parent that is a file, no write permission, a read-only file system. An existing folder is probed by
    creating and removing a file in it; a missing one by creating and removing a folder in its nearest
    existing parent.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{flag} {path} is a file, not a folder")
    if path.is_dir():
        try:
            fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise output_error(path, exc, what=f"write into {flag}") from None
        return path
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"cannot create {flag} {path}: {parent} is a file, not a folder")
    try:  # a probe, not os.access: /proc, immutable folders and read-only mounts answer only to trying
        os.rmdir(tempfile.mkdtemp(prefix=".write-test.", dir=parent))
    except OSError as exc:
        raise output_error(path, exc, what=f"create {flag}") from None
    return path


def check_file(path: str | os.PathLike, flag: str = "the output file") -> Path:
    """Check, without creating anything, that the output file `path` can be written: not a folder, and
    its folder creatable or writable (`check_dir`)."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{flag} {path} is a folder, not a file")
    check_dir(path.absolute().parent, flag)
    return path


def prepare_dir(path: str | os.PathLike, flag: str = "the output folder") -> Path:
    """`check_dir`, then create the folder (and its parents)."""
    check_dir(path, flag)
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(path, exc, what=f"create {flag}") from None
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, on failure remove it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise output_error(path, exc) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # After the writer: some writers (safetensors) replace the temporary file by a new one with mode
        # 0600 rather than writing into the one mkstemp made, so the mode is set on what they left.
        os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise output_error(path, exc) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_with(path: str | os.PathLike, writer: Callable[[Path], Any]) -> None:
    """Atomically create `path` by calling `writer(tmp_path)`."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_with(path, lambda p: p.write_text(text))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
