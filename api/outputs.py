"""Safe output writing, the one place for it: nothing the user had is destroyed, outputs appear whole or not at all.

Every command that writes (``compile``, ``run -o``, ``generate``, ``build``, ``quantize --qdq/--report``, the demo)
goes through here:

- :func:`check_output` is called *before* any work: it refuses an existing output unless ``overwrite`` is set
  (``--force``), refuses to replace something of another kind (a file with a directory, a directory that is not
  this kind of dlproc output), and checks that the folder that will receive it can be written;
- :func:`atomic_dir` and :func:`atomic_file` write into a hidden temporary sibling (``.NAME.tmp-XXXX``) and rename
  it into place only when complete; on any exception (a full disk, Ctrl-C) the temporary is removed and an existing
  output stays as it was. Outputs get the normal permissions of the user's umask (not the 0700/0600 of
  :mod:`tempfile`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dlproc.errors import OutputError

__all__ = ["check_output", "atomic_dir", "atomic_file"]

FORCE_HINT = "pass --force (API: overwrite=True) to replace it"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output(path: str | Path, *, overwrite: bool = False, kind: str = "file", marker: str | None = None,
                 what: str = "output") -> Path:
    """Refuse an output location before any work is done.

    Parameters
    ----------
    path : str or Path
        The file or directory to be written.
    overwrite : bool
        Allow replacing an existing output of the same kind.
    kind : {"file", "dir"}
        What will be written there.
    marker : str, optional
        For ``kind="dir"``: a file every output of this kind holds (``manifest.json`` for a bundle); an existing
        non-empty directory without it is never replaced, even with ``overwrite``.
    what : str
        The output's name in messages ("bundle directory", "QDQ model", ...).

    Returns
    -------
    Path

    Raises
    ------
    OutputError
        The location exists (without ``overwrite``), holds something of another kind, or its nearest existing
        folder cannot be written.
    """
    p = Path(path)
    if p.exists() or p.is_symlink():
        if kind == "dir":
            if not p.is_dir():
                raise OutputError(f"{what} {p} exists and is not a directory; choose another path")
            if any(p.iterdir()):
                if marker is not None and not (p / marker).exists():
                    raise OutputError(f"{what} {p} is a non-empty directory that is not a previous {what} (no "
                                      f"{marker}); refusing to replace it, choose another path")
                if not overwrite:
                    raise OutputError(f"{what} {p} already exists; {FORCE_HINT}")
        else:
            if p.is_dir():
                raise OutputError(f"{what} {p} is a directory; give a file path")
            if not overwrite:
                raise OutputError(f"{what} {p} already exists; {FORCE_HINT}")
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {what} {p}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {what} {p}: no permission to write in {parent}")
    return p


def _os_error(exc: OSError, path: Path, what: str) -> OutputError:
    reason = exc.strerror or str(exc)
    return OutputError(f"writing {what} {path} failed: {reason}; nothing was written")


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False, marker: str | None = None,
               what: str = "output directory") -> Iterator[Path]:
    """Build a directory in a temporary sibling and move it into place when the ``with`` block completes.

    Yields the temporary directory to fill. An existing directory at ``path`` (allowed by :func:`check_output`
    with the same arguments) is replaced only after the new one is complete.
    """
    p = check_output(path, overwrite=overwrite, kind="dir", marker=marker, what=what)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.tmp-", dir=p.parent))
    except OSError as exc:
        raise _os_error(exc, p, what) from exc
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if p.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{p.name}.old-", dir=p.parent))
            os.replace(p, old)
            try:
                os.replace(tmp, p)
            except BaseException:
                os.replace(old, p)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, p)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OutputError):
            raise
        raise _os_error(exc, p, what) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path, *, overwrite: bool = False, what: str = "output file") -> Iterator[Path]:
    """Write a file under a temporary sibling name and rename it into place when the ``with`` block completes.

    Yields the temporary path to write (it has the same suffix as ``path``, for writers that look at it).
    """
    p = check_output(path, overwrite=overwrite, kind="file", what=what)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{p.name}.tmp-", suffix=p.suffix, dir=p.parent)
        os.close(fd)
    except OSError as exc:
        raise _os_error(exc, p, what) from exc
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OutputError):
            raise
        raise _os_error(exc, p, what) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
