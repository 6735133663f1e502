"""Atomic file and folder writes: a crash never leaves a half-written file that looks complete.

Written files and folders get the usual permissions under the user's umask (0644 / 0755 with the
common umask 022), not the private 0600 / 0700 of ``mkstemp``/``mkdtemp``. A temporary name
carries the writer's host and process id, so the next write of the same target on that host
removes what a killed writer left behind. A full disk or an unwritable folder becomes an ``OutputWriteError`` naming the path.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

from defectgen.errors import ConfigError, OutputExistsError, OutputWriteError


_CAUSES = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EACCES: "permission denied",
           errno.EPERM: "operation not permitted", errno.EROFS: "read-only file system",
           errno.EEXIST: "a file of that name is in the way, not a folder",
           errno.ENOTDIR: "a part of this path is a file, not a folder"}
# What a user's paths and disks cause, as opposed to a bug: the command line says these in one line.
USER_ERRNOS = frozenset({*_CAUSES, errno.ENOENT, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EFBIG})


def write_error(err: OSError, path: Path) -> OutputWriteError:
    """One line naming ``path`` and the cause of ``err`` (``disk full`` for ENOSPC)."""
    cause = _CAUSES.get(err.errno, err.strerror or str(err))
    return OutputWriteError(err.errno, f"{path}: cannot write ({cause})")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def _tmp_prefix(name: str) -> str:
    return f".{name}.{_host()}-{os.getpid()}."


# .NAME.HOST-PID.RANDOM.tmp: only this host's temporaries of dead processes are removed, so writers on
# other machines sharing the folder are left alone.
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)\.[^.]+(\.tmp|\.[A-Za-z0-9]+)$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Before temporaries carried host and pid they were .NAME.RANDOM.tmp (mkdtemp's 8 characters): no
# writer makes those any more, so one that is found is the leftover of a killed older defectgen.
_OLD_TMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def _stale(p: Path, name: str | None) -> bool:
    m = _TMP.match(p.name)
    if m:
        return (name is None or m["name"] == name) and m["host"] == _host() and not _alive(int(m["pid"]))
    m = _OLD_TMP.match(p.name)
    return m is not None and (name is None or m["name"] == name)


def clean_stale_tmp(parent: Path, name: str | None = None) -> list[Path]:
    """Remove hidden temporary files/folders for target ``name`` (None: any target) in ``parent`` whose
    writing process is gone: this host's dead writers, and every old-style temporary."""
    removed = []
    if not Path(parent).is_dir():
        return removed
    for p in Path(parent).iterdir():
        if _stale(p, name):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:
        raise OutputExistsError(f"{err.filename or path}: exists and is not a folder") from err
    except OSError as err:
        raise write_error(err, path) from err


def _temporary(make: Any, path: Path, name: str, suffix: str) -> Any:
    """``mkstemp``/``mkdtemp`` beside ``path``; a refusal (read-only folder, full disk) names ``path``, not the
    hidden temporary name."""
    try:
        return make(dir=path.parent, prefix=_tmp_prefix(name), suffix=suffix)
    except OSError as err:
        raise write_error(err, path) from err


@contextmanager
def _replacing(tmp: str, path: Path) -> Iterator[None]:
    """Rename ``tmp`` onto ``path`` when the block succeeds; otherwise remove ``tmp`` (a write error names ``path``)."""
    try:
        yield
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(err, path) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes, sync: bool = True) -> None:
    """Write ``data`` to a temporary sibling and rename it over ``path``. ``sync=False`` skips the
    fsync: still safe against a killed process, only not against a power cut."""
    path = Path(path)
    _mkdir(path.parent)
    clean_stale_tmp(path.parent, path.name)
    fd, tmp = _temporary(tempfile.mkstemp, path, path.name, ".tmp")
    with _replacing(tmp, path):
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str, sync: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), sync)


def atomic_write_json(path: Path, obj: Any, sync: bool = True) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", sync)


def atomic_save_image(path: Path, image: Image.Image) -> None:
    path = Path(path)
    _mkdir(path.parent)
    clean_stale_tmp(path.parent, path.stem)
    fd, tmp = _temporary(tempfile.mkstemp, path, path.stem, path.suffix)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    with _replacing(tmp, path):
        image.save(tmp)


def _normal_modes(folder: Path) -> None:
    """Files 0666 and folders 0777 less the umask, whatever the writer used (safetensors writes 0600)."""
    mask = _umask()
    for parent, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(parent, d), 0o777 & ~mask)
        for f in files:
            os.chmod(os.path.join(parent, f), 0o666 & ~mask)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it is renamed to ``path`` in one step.

    Leftovers of a killed earlier write of ``path`` are removed first.
    """
    path = Path(path)
    _mkdir(path.parent)
    clean_stale_tmp(path.parent, path.name)
    tmp = Path(_temporary(tempfile.mkdtemp, path, path.name, ".tmp"))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        _normal_modes(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, (OutputWriteError, FileNotFoundError, OutputExistsError)) or err.errno not in _CAUSES:
            raise
        raise write_error(err, path) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def safe_name(name: str, what: str) -> str:
    """``name`` if it can be one path component inside an output folder; else a clear error.

    Refuses empty names, ``.``/``..``, separators, hidden names and control characters, so that a
    name from a config or manifest never writes outside its folder.
    """
    if (not isinstance(name, str) or not name or name in (".", "..") or name.startswith(".") or "/" in name
            or "\\" in name or any(ord(c) < 32 for c in name)):
        raise ConfigError(f"{what} {name!r}: not allowed as a file or folder name (no '/', '\\', '..', leading '.')")
    return name


def refuse_existing(path: Path, overwrite: bool = False) -> None:
    """Fail before any work when ``path`` holds something and ``overwrite`` was not given."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputExistsError(f"{path} exists and is not empty; choose another folder or pass --overwrite")


def ensure_empty_output(path: Path, overwrite: bool = False) -> Path:
    """Create ``path``; refuse a non-empty existing folder unless ``overwrite`` is given."""
    path = Path(path)
    refuse_existing(path, overwrite)
    if path.is_dir() and any(path.iterdir()):
        shutil.rmtree(path)
    _mkdir(path)
    return path
