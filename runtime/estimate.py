"""Performance estimate: per-layer cycles, latency and frames/s from the compiled program, without simulating.

The estimate replays the instruction stream through a timing model of the processor: an in-order dispatcher that
hands each instruction to its engine when that engine is free, a DMA engine whose instructions take
``latency + beats`` (bursts pipelined, never crossing 4 KiB or 256 beats), and a compute engine whose GEMM takes one
step per cycle after its pipeline fills. SYNC and END wait for both engines. The constants of the model
(:class:`TimingModel`) are those of the RTL in ``processor/``; ``tests/test_estimate.py`` holds the estimate within 5%
of the RTL's own cycle counters on several configurations.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlproc.compiler.codegen import END_MARK
from dlproc.compiler.network import CompiledNetwork
from dlproc.processor.isa import InstructionSet, Opcode
from dlproc.runtime.profile import LayerProfile, Profile

__all__ = ["TimingModel", "DdrTiming", "estimate_performance", "program_cycles"]


@dataclass(frozen=True)
class DdrTiming:
    """The memory system seen by the AXI4 master.

    Attributes
    ----------
    read_latency : int
        Cycles from a read address handshake to its first data beat.
    write_latency : int
        Cycles from the last write beat to its response.
    beats_per_cycle : float
        Sustained beats per cycle (1.0 = the AXI port's full width every cycle).
    """

    read_latency: int = 24
    write_latency: int = 8
    beats_per_cycle: float = 1.0


@dataclass(frozen=True)
class TimingModel:
    """Cycle costs of the processor's units (from the RTL).

    Attributes
    ----------
    dispatch : int
        Cycles the dispatcher spends per instruction (decode and legality check).
    gemm_fill : int
        GEMM/POST pipeline fill and drain cycles per instruction.
    dma_setup : int
        Cycles of a DMA instruction before its first address is issued.
    burst_gap : int
        Extra cycles per burst beyond its beats.
    store_row : int
        Extra cycles per STORE row (output-buffer read latency).
    fc_row : int
        Extra cycles per fc output row.
    """

    dispatch: int = 1
    gemm_fill: int = 6
    dma_setup: int = 2
    burst_gap: int = 0
    store_row: int = 2
    fc_row: int = 1


def _bursts(addr: int, length: int, beat: int) -> int:
    """Bursts needed for ``length`` bytes at ``addr`` (max 256 beats, never crossing 4 KiB)."""
    n = 0
    end = addr + length
    while addr < end:
        room = min(4096 - addr % 4096, 256 * beat, end - addr)
        addr += room
        n += 1
    return n


def _durations(net: CompiledNetwork, timing: TimingModel, ddr: DdrTiming) -> list[tuple[Opcode, int, int]]:
    """Per instruction: (opcode, engine cycles, MARK layer or -1)."""
    c = net.config
    isa = InstructionSet(c)
    beat = c.beat_bytes
    rate = ddr.beats_per_cycle
    out = []
    for word in net.instructions():
        ins = isa.decode(word)
        op = ins.opcode
        f = ins.fields
        if op == Opcode.LOAD:
            beats = f["n1"] * f["n2"] * f["len0"] // beat
            bursts = f["n1"] * f["n2"] * _bursts(f["ddr_addr"] % 4096, f["len0"], beat)
            cyc = timing.dma_setup + ddr.read_latency + int(beats / rate) + bursts * timing.burst_gap
        elif op == Opcode.STORE:
            row_bytes = f["n0"] * c.input_entry_bytes
            rows = f["n1"] * f["n2"]
            beats = rows * row_bytes // beat
            bursts = rows * _bursts(f["ddr_addr"] % 4096, row_bytes, beat)
            cyc = (timing.dma_setup + int(beats / rate) + bursts * timing.burst_gap + rows * timing.store_row
                   + ddr.write_latency)
        elif op == Opcode.FC:
            row_bytes = f["n_in"] * c.input_entry_bytes
            beats = f["n_out"] * row_bytes // beat
            compute = f["n_out"] * (f["n_in"] * c.conv_ic_lanes // c.fc_threads + timing.fc_row)
            cyc = timing.dma_setup + ddr.read_latency + max(int(beats / rate), compute)
        elif op == Opcode.GEMM:
            cyc = f["r0"] * f["r1"] * f["r2"] * f["s0"] * f["s1"] + timing.gemm_fill
        elif op == Opcode.POST:
            cyc = f["n"] + timing.gemm_fill
        else:
            cyc = 0
        out.append((op, cyc, f.get("layer", -1) if op == Opcode.MARK else -1))
    return out


def program_cycles(net: CompiledNetwork, *, timing: TimingModel | None = None, ddr: DdrTiming | None = None,
                   segment_start: int = 0, segment_count: int | None = None) -> tuple[int, list[tuple[int, int]]]:
    """Replay (part of) the program through the timing model.

    Returns
    -------
    cycles : int
        Cycles from START to DONE of the segment.
    events : list of (int, int)
        ``(layer id, cycle)`` of each MARK, as the hardware's event log would record them.
    """
    timing = timing or TimingModel()
    ddr = ddr or DdrTiming()
    durs = _cached_durations(net, timing, ddr)
    end = len(durs) if segment_count is None else segment_start + segment_count
    t = 0
    free = {"dma": 0, "compute": 0}
    events = []
    for op, cyc, layer in durs[segment_start:end]:
        t += timing.dispatch
        if op in (Opcode.LOAD, Opcode.STORE, Opcode.FC):
            start = max(t, free["dma"])
            free["dma"] = start + cyc
            t = start
        elif op in (Opcode.GEMM, Opcode.POST):
            start = max(t, free["compute"])
            free["compute"] = start + cyc
            t = start
        elif op in (Opcode.SYNC, Opcode.END):
            t = max(t, free["dma"], free["compute"])
            if op == Opcode.END:
                break
        elif op == Opcode.MARK:
            events.append((layer, t))
    return t, events


_CACHE: dict[tuple, list] = {}


def _cached_durations(net: CompiledNetwork, timing: TimingModel, ddr: DdrTiming) -> list:
    key = (id(net), net.instr_count, timing, ddr)
    if key not in _CACHE:
        if len(_CACHE) > 16:
            _CACHE.clear()
        _CACHE[key] = _durations(net, timing, ddr)
    return _CACHE[key]


def estimate_performance(net: CompiledNetwork, *, timing: TimingModel | None = None,
                         ddr: DdrTiming | None = None) -> Profile:
    """Estimate one frame's per-layer cycles, latency, frames/s and MAC utilization.

    Parameters
    ----------
    net : CompiledNetwork
        The compiled program.
    timing : TimingModel, optional
        Unit costs of the processor (defaults match the RTL).
    ddr : DdrTiming, optional
        Memory latency and bandwidth (defaults match the simulator's DDR model).

    Returns
    -------
    Profile
        Same type as the hardware profile of ``Workflow.predict(..., profile=True)``.
    """
    total = 0
    per_layer: dict[int, int] = {}
    for seg in net.segments:
        if seg.kind != "hw":
            continue
        cycles, events = program_cycles(net, timing=timing, ddr=ddr, segment_start=seg.start,
                                        segment_count=seg.count)
        total += cycles
        for (lid, cyc), (_n, ncyc) in zip(events, events[1:], strict=False):
            if lid != END_MARK:
                per_layer[lid] = per_layer.get(lid, 0) + ncyc - cyc
    layers = [LayerProfile(layer.name, layer.op, layer.target, per_layer.get(layer.index, 0), layer.macs)
              for layer in net.layers]
    notes = [f"Estimated from the program with DDR read latency {(ddr or DdrTiming()).read_latency} cycles."]
    if any(layer.target == "host" for layer in net.layers):
        notes.append("Layers on the host are not included in the processor latency.")
    return Profile(net.config, layers, total, 0, "estimate", 1, notes)
