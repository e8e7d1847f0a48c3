"""Performance estimate: per-layer cycles, latency and frames/s from the compiled program, without simulating.

The estimate replays the instruction stream through a timing model of the processor: an in-order dispatcher that
hands each instruction to its engine when that engine is free, a DMA engine whose instructions take
``latency + beats`` (bursts pipelined, never crossing 4 KiB or 256 beats) through the memory system of
:mod:`dlproc.boards.memory` (latency and bandwidth in ns and GB/s, converted with the configuration's clock: the
ZCU102's PS DDR4 by default), and a compute engine whose GEMM takes one step per cycle after its pipeline fills.
SYNC and END wait for both engines. The constants of the model (:class:`TimingModel`) are imported from the RTL in
``processor/`` where it defines them; ``tests/test_sim.py`` and ``tests/test_property.py`` hold the estimate within
3% (small_int8) to 5% (the property configurations) of the RTL's own cycle counters.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlproc.boards.memory import DdrModel, DdrTiming, memory_model
from dlproc.compiler.network import CompiledNetwork
from dlproc.processor.axi import AXI_PAGE_BYTES, MAX_BURST_BEATS
from dlproc.processor.checker import CHECK_LATENCY
from dlproc.processor.config import INSTRUCTION_BYTES, ProcessorConfig
from dlproc.processor.dma import MAX_OUTSTANDING
from dlproc.processor.engine import ComputeEngine
from dlproc.processor.fc import FcUnit
from dlproc.processor.fetch import FETCH_BURST_INSTRUCTIONS, FETCH_DEPTH
from dlproc.processor.isa import Engine, InstructionSet, Opcode
from dlproc.processor.top import DISPATCH_CYCLES
from dlproc.runtime.profile import LayerProfile, Profile, add_layer_cycles

__all__ = ["TimingModel", "DdrTiming", "estimate_performance", "program_cycles", "layer_ddr_bytes"]


@dataclass(frozen=True)
class TimingModel:
    """Cycle costs of the processor's units (from the RTL in ``processor/``).

    Attributes
    ----------
    dispatch : int
        Cycles between two dispatched instructions at best (``top.DISPATCH_CYCLES``).
    check : int
        Cycles from an instruction's last R beat to its FIFO entry (the fetch unit's pipelined legality checker,
        ``checker.CHECK_LATENCY``).
    fetch_depth : int
        Effective instruction prefetch depth: the ``FetchUnit`` FIFO holds ``FETCH_DEPTH`` (8), but a burst is only
        requested when the whole burst fits, so on average half a burst of it is unused (the RTL's counters fit
        ``FETCH_DEPTH - FETCH_BURST_INSTRUCTIONS // 2`` = 6 best).
    fetch_burst : int
        Instructions per fetch burst; a burst is requested when the FIFO has room for all of it.
    outstanding : int
        AXI bursts in flight per direction (``dma.MAX_OUTSTANDING``).
    dma_setup : int
        Cycles of a DMA instruction before its first burst is issued.
    start : int
        Cycles from START to the first instruction fetch.
    completion : int
        Cycles after a burst's last beat (or write response) until it no longer counts as outstanding.
    fc_row : int
        fc module cycles per output row beyond its multiply-accumulates (row hand-over).
    """

    dispatch: int = DISPATCH_CYCLES
    check: int = CHECK_LATENCY
    fetch_depth: int = FETCH_DEPTH - FETCH_BURST_INSTRUCTIONS // 2
    fetch_burst: int = FETCH_BURST_INSTRUCTIONS
    outstanding: int = MAX_OUTSTANDING
    dma_setup: int = 7
    start: int = 6
    completion: int = 2
    fc_row: int = 0


def _burst_lengths(addr: int, length: int, beat: int) -> list[int]:
    """Beats of each burst for ``length`` bytes at ``addr`` (at most ``MAX_BURST_BEATS``, never crossing 4 KiB)."""
    page = AXI_PAGE_BYTES
    if addr % page + length <= page and length <= MAX_BURST_BEATS * beat:  # the common case: one burst
        return [length // beat]
    out = []
    end = addr + length
    while addr < end:
        room = min(page - addr % page, MAX_BURST_BEATS * beat, end - addr)
        out.append(room // beat)
        addr += room
    return out


def _stream(bursts: list[int], latency: int, outstanding: int, rate: float, completion: int,
            consume: list[float] | None = None, timeline: list | None = None) -> int:
    """Cycles to move a sequence of bursts with at most ``outstanding`` in flight.

    Burst ``j`` is issued one cycle after burst ``j-1`` and not before burst ``j-outstanding`` completed; its data
    arrives ``latency`` cycles after issue and occupies the data channel for ``beats / rate`` cycles, or
    ``consume[j]`` cycles when the consumer (the fc module) is slower.
    """
    issue = [0] * len(bursts)
    done = [0] * len(bursts)
    channel = 0.0
    for j, beats in enumerate(bursts):
        t = issue[j - 1] + 1 if j else 0
        if j >= outstanding:
            t = max(t, done[j - outstanding])
        issue[j] = t
        start = max(t + latency, channel)
        channel = start + max(beats / rate, consume[j] if consume else 0.0)
        done[j] = int(channel + 0.999) + completion
    if timeline is not None:
        timeline.extend((issue[j], done[j] - completion) for j in range(len(bursts)))
    return done[-1] - completion if bursts else 0


#: Chunk sequences longer than this are simulated for their first chunks and extrapolated.
EXACT_CHUNKS = 48


def _chunked_stream(addrs: list[int], length: int, beat: int, latency: int, outstanding: int, rate: float,
                    completion: int, consume_per_chunk: float | None, timeline: list) -> int:
    """Cycles to stream ``len(addrs)`` chunks of ``length`` bytes (rows of a LOAD, STORE or FC).

    Chunks differ only in where 4 KiB boundaries split them, so beyond :data:`EXACT_CHUNKS` chunks the stream is
    simulated for 16 and 32 chunks and the per-chunk period extrapolated (keeps an AlexNet estimate fast).
    """
    def run(n: int, tl: list | None) -> int:
        bursts, consume = [], []
        for a in addrs[:n]:
            rb = _burst_lengths(a, length, beat)
            bursts += rb
            if consume_per_chunk is not None:
                consume += [consume_per_chunk * b * beat / length for b in rb]
        return _stream(bursts, latency, outstanding, rate, completion, consume or None, timeline=tl)

    n = len(addrs)
    if n <= EXACT_CHUNKS:
        return run(n, timeline)
    t16 = run(16, None)
    tail: list = []
    t32 = run(32, tail)
    total = int(t32 + (n - 32) * (t32 - t16) / 16 + 0.5)
    timeline.extend((i + total - t32, d + total - t32) for i, d in tail[-2 * outstanding:])
    return total


def _durations(c: ProcessorConfig, words: list[int], timing: TimingModel,
               ddr: DdrTiming) -> list[tuple[Opcode, int, int, list]]:
    """Per instruction: (opcode, engine cycles from dispatch, MARK layer or -1, read bursts (issue, data end))."""
    isa = InstructionSet(c)
    engine = ComputeEngine.timing_of(c)  # GEMM/POST cycles exactly as the RTL's pipeline (processor/engine.py)
    beat = c.beat_bytes
    rate = ddr.stream_rate  # one DMA engine: a read or a write stream at a time, each under both limits
    out = []
    for word in words:
        ins = isa.decode(word)
        op = ins.opcode
        reads: list = []
        if op == Opcode.LOAD:
            addrs = [ins.ddr_addr + i2 * ins.ddr_stride2 + i1 * ins.ddr_stride1
                     for i2 in range(ins.n2) for i1 in range(ins.n1)]
            cyc = timing.dma_setup + _chunked_stream(addrs, ins.len0, beat, ddr.read_latency, timing.outstanding,
                                                     rate, timing.completion, None, reads)
        elif op == Opcode.STORE:
            row_bytes = ins.n0 * c.input_entry_bytes
            addrs = [ins.ddr_addr + i2 * ins.ddr_stride2 + i1 * ins.ddr_stride1
                     for i2 in range(ins.n2) for i1 in range(ins.n1)]
            # write data follows its address by a cycle: one extra beat time per burst; the response comes
            # write_latency after the last beat
            cyc = timing.dma_setup + _chunked_stream(addrs, row_bytes + beat, beat, ddr.write_latency,
                                                     timing.outstanding, rate, timing.completion, None, [])
        elif op == Opcode.FC:
            row_bytes = ins.n_in * c.input_entry_bytes
            # the fc module's own cycle count (one source: processor/fc.py): rows, then its fixed pipeline
            compute = FcUnit.cycles_for(c, ins.n_out, ins.n_in)
            fixed = FcUnit.cycles_for(c, 0, ins.n_in)
            per_row = (compute - fixed) / ins.n_out + timing.fc_row
            addrs = [ins.ddr_addr + o * ins.row_stride for o in range(ins.n_out)]
            cyc = timing.dma_setup + fixed + _chunked_stream(addrs, row_bytes, beat, ddr.read_latency,
                                                             timing.outstanding, rate, timing.completion, per_row,
                                                             reads)
        elif op == Opcode.GEMM:
            spatial = ins.s0 * ins.s1
            cyc = engine.cycles(ins.r0 * ins.r1 * ins.r2 * spatial, writes_outputs=bool(ins.finalize),
                                spatial=spatial)
        elif op == Opcode.POST:
            cyc = engine.cycles(ins.n, writes_outputs=True)
        else:
            cyc = 0
        keep = reads[-2 * timing.outstanding:]  # only the last bursts can still hold up an instruction fetch
        out.append((op, cyc, ins.layer if op == Opcode.MARK else -1,
                    [(timing.dma_setup + i, timing.dma_setup + d) for i, d in keep]))
    return out


def program_cycles(config: ProcessorConfig, words: list[int], *, timing: TimingModel | None = None,
                   ddr: str | DdrModel | DdrTiming | None = None,
                   spans: list | None = None) -> tuple[int, list[tuple[int, int]]]:
    """Replay a program (from START to END) through the timing model.

    Parameters
    ----------
    ddr : str, DdrModel or DdrTiming, optional
        The memory system (default ``"zcu102"`` at ``config.clock_mhz``; see :func:`dlproc.boards.memory.memory_model`).
    spans : list, optional
        Receives ``(engine, layer, start, end)`` for every instruction run on an engine (``"dma"`` or
        ``"compute"``; ``layer`` from the last MARK, -1 before any).

    Returns
    -------
    cycles : int
        Cycles from START to DONE of the segment.
    events : list of (int, int)
        ``(layer id, cycle)`` of each MARK, as the hardware's event log would record them.
    """
    timing = timing or TimingModel()
    ddr = memory_model(ddr, config)
    prog = _durations(config, words, timing, ddr)
    beats_per_instr = max(1, INSTRUCTION_BYTES // config.beat_bytes)
    fb, depth = timing.fetch_burst, timing.fetch_depth
    dispatched = [0] * len(prog)
    avail = [0] * len(prog)
    fetch_channel = timing.start
    t = timing.start
    free = {Engine.DMA: 0, Engine.COMPUTE: 0}
    events = []
    layer_now = -1
    reads: list[tuple[int, int]] = []  # absolute (issue, data end) of the DMA read bursts so far
    for i, (op, cyc, layer, bursts) in enumerate(prog):
        if i % fb == 0:  # the fetch burst holding instruction i: issued when the FIFO has room for it
            room_at = dispatched[i + fb - depth - 1] if i + fb - depth - 1 >= 0 else 0
            issue = max(room_at, fetch_channel - ddr.read_latency, timing.start)
            # the read data channel is shared and in order: DMA read bursts issued earlier go first
            queued = [end for iss, end in reads if iss < issue]
            start = max(issue + ddr.read_latency, max(queued, default=0))
            for j in range(i, min(i + fb, len(prog))):
                avail[j] = start + (j - i + 1) * beats_per_instr + timing.check
            fetch_channel = avail[min(i + fb, len(prog)) - 1] - timing.check  # R channel free again
        t = max(t + timing.dispatch, avail[i])
        if op.engine in (Engine.DMA, Engine.COMPUTE):
            t = max(t, free[op.engine])
            free[op.engine] = t + cyc
            if spans is not None:
                spans.append((op.engine.value, layer_now, t, t + cyc))
            if op.engine is Engine.DMA and bursts:
                reads = [(t + iss, t + end) for iss, end in bursts]
        elif op in (Opcode.SYNC, Opcode.END):
            t = max(t, free[Engine.DMA], free[Engine.COMPUTE])
            if op == Opcode.END:
                dispatched[i] = t
                break
        elif op == Opcode.MARK:
            events.append((layer, t))
            layer_now = layer
        dispatched[i] = t
    return t, events


def _merge_spans(spans: list) -> list[list]:
    """``[engine, layer, start, end]`` with back-to-back spans of one engine and layer joined (for the trace)."""
    merged: dict[str, list[list]] = {"dma": [], "compute": []}
    for engine, lid, start, end in spans:
        runs = merged[engine]
        if runs and runs[-1][1] == lid and runs[-1][3] == start:
            runs[-1][3] = end
        elif end > start:
            runs.append([engine, lid, start, end])
    return merged["dma"] + merged["compute"]


def layer_ddr_bytes(net: CompiledNetwork) -> dict[int, int]:
    """Bytes each processor layer moves between DDR and the processor, from its program.

    LOAD moves ``n2 x n1 x len0`` bytes, STORE ``n2 x n1`` runs of ``n0`` buffer entries, FC ``n_out`` weight rows of
    ``n_in`` entries (``docs/isa.md``); instruction fetch is not counted.

    Returns
    -------
    dict of int to int
        Layer index to bytes read plus bytes written, for every processor layer.
    """
    c = net.config
    isa = InstructionSet(c)
    words = net.instructions()
    out = {}
    for layer in net.layers:
        if layer.target != "hw":
            continue
        total = 0
        for word in words[layer.instr_start:layer.instr_start + layer.instr_count]:
            ins = isa.decode(word)
            f = ins.fields
            if ins.opcode == Opcode.LOAD:
                total += f["n2"] * f["n1"] * f["len0"]
            elif ins.opcode == Opcode.STORE:
                total += f["n2"] * f["n1"] * f["n0"] * c.input_entry_bytes
            elif ins.opcode == Opcode.FC:
                total += f["n_out"] * f["n_in"] * c.input_entry_bytes
        out[layer.index] = total
    return out


def estimate_performance(net: CompiledNetwork, *, timing: TimingModel | None = None,
                         ddr: str | DdrModel | DdrTiming | None = None) -> Profile:
    """Estimate one frame's per-layer cycles, latency, frames/s and MAC utilization.

    Parameters
    ----------
    net : CompiledNetwork
        The compiled program.
    timing : TimingModel, optional
        Unit costs of the processor (defaults match the RTL).
    ddr : str, DdrModel or DdrTiming, optional
        The memory system: a name of :data:`dlproc.boards.memory.MEMORY_MODELS`, a model in GB/s and ns, or a
        timing in cycles. The default, ``"zcu102"`` at the configuration's clock, is also the Verilator
        simulator's default.

    Returns
    -------
    Profile
        Same type as the hardware profile of ``Workflow.predict(..., profile=True)``.
    """
    ddr = memory_model(ddr, net.config)
    total = 0
    per_layer: dict[int, float] = {}
    busy: dict[int, dict[str, int]] = {}
    timeline = []
    for seg in net.segments:
        if seg.kind != "hw":
            continue
        words = net.instructions()[seg.start:seg.start + seg.count]
        spans: list = []
        cycles, events = program_cycles(net.config, words, timing=timing, ddr=ddr, spans=spans)
        total += cycles
        add_layer_cycles(events, per_layer)
        for engine, lid, start, end in spans:
            key = busy.setdefault(lid, {"dma": 0, "compute": 0})
            key[engine] += end - start
        timeline.append({"kind": "hw", "cycles": cycles, "events": [list(e) for e in events],
                         "engines": _merge_spans(spans)})
    ddr_bytes = layer_ddr_bytes(net)
    layers = [LayerProfile(layer.name, layer.op, layer.target, int(per_layer.get(layer.index, 0)), layer.macs,
                           ddr_bytes=ddr_bytes.get(layer.index, 0),
                           compute_busy=busy.get(layer.index, {}).get("compute", 0) if layer.target == "hw" else None,
                           dma_busy=busy.get(layer.index, {}).get("dma", 0) if layer.target == "hw" else None)
              for layer in net.layers]
    notes = [f"Estimated from the program with the memory model {ddr.name} (read latency {ddr.read_latency} "
             f"cycles, {ddr.stream_rate:.3g} beats per cycle per stream)."]
    if any(layer.target == "host" for layer in net.layers):
        notes.append("Layers on the host are not estimated and not included in the latency or Frames/s.")
    return Profile(net.config, layers, total, 0, "estimate", 1, notes, target="estimate", network=net.name,
                   timeline=timeline)
