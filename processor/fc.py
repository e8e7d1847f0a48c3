"""The fc unit: fully connected layers with weights streamed from DDR (the FC instruction).

Semantics are those of ``GoldenModel._fc`` in ``dlproc.sim.golden``: output ``o`` (``0 <= o < n_out``) is
``sum_i w[o][i] * x[i]`` over the ``n_in * conv_ic_lanes`` int8 elements ``x`` of input entries
``inp_base .. inp_base + n_in - 1`` (entry ``e`` lane ``l`` is element ``e * conv_ic_lanes + l``), plus the old
lane value when ``accumulate``; int32, wrapping. It is written to lane ``o % conv_oc_lanes`` of accumulator entry
``acc_base + o // conv_oc_lanes``.

The DMA engine reads the weight rows (row ``o`` at ``ddr_addr + o * row_stride``, ``n_in * conv_ic_lanes`` bytes,
a whole number of AXI beats) and pushes them, row 0 first, into ``weights``. Each cycle the unit multiplies
``P = min(fc_threads, beat bytes)`` weights with the matching input elements: a beat wider than ``P`` bytes is
used over several cycles, and when the beat is narrower than ``fc_threads`` bytes the DDR stream (one beat per
cycle at most) is the limit anyway, so only ``P`` multipliers are built.

Pipeline of one piece of ``P`` weights issued in cycle ``t``::

    t      issue: the held beat's piece, input read address
    t+1    input data -> DotProductInt8 (2 stages)
    t+3    row accumulator (int32); on the row's last piece: accumulator read address
    t+4    accumulator lane write (old lane added when accumulate)

With a beat always available the instruction takes ``n_out * n_in * conv_ic_lanes / P + 5`` cycles from its
command handshake to the next possible one (:meth:`FcUnit.cycles`).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .buffers import acc_entry_layout, buffer_geometry
from .config import ProcessorConfig
from .engine import DotProductInt8
from .isa import INSTRUCTION_BITS, InstructionSet, Opcode

__all__ = ["FcUnit"]


class FcUnit(wiring.Component):
    """Executes FC instructions on a stream of weight beats, one piece of ``P`` weights per cycle.

    Parameters
    ----------
    config : ProcessorConfig
        The processor configuration (only dtype ``"int8"`` is implemented).

    Members
    -------
    cmd : In(stream.Signature(256))
        The FC instruction word (other opcodes are accepted and ignored); ``ready`` is ``~busy``. Fields are
        assumed legal.
    weights : In(stream.Signature(axi_data_width))
        Weight beats, row 0 first, little-endian (byte ``b`` of the beat is bits ``[8b+7 : 8b]``). One beat is held
        in a register; ``ready`` depends only on internal state. Beats pushed before the command (or beyond
        it, for the next FC) wait there.
    busy : Out(1)
        High from the cycle after the command handshake until the cycle of its last accumulator write.
    inp_rd : In(ReadPort.Signature(input))
        Input buffer read port (synchronous, 1 cycle).
    acc_rd : In(ReadPort.Signature(acc))
        Accumulator read port (for ``accumulate``).
    acc_wr : In(WritePort.Signature(acc, granularity=32))
        Accumulator write port; one lane (one ``en`` bit) per write.
    """

    def __init__(self, *, config: ProcessorConfig):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
        if config.dtype != "int8":
            raise NotImplementedError(f"the fc unit for dtype {config.dtype!r} is not implemented yet")
        self._config = config
        self._isa = InstructionSet(config)
        geo = {name: buffer_geometry(config, name) for name in ("input", "acc")}
        super().__init__({
            "cmd": In(stream.Signature(INSTRUCTION_BITS)),
            "weights": In(stream.Signature(config.axi_data_width)),
            "busy": Out(1),
            "inp_rd": In(geo["input"].read_port_signature()),
            "acc_rd": In(geo["acc"].read_port_signature()),
            "acc_wr": In(geo["acc"].write_port_signature()),
        })

    @property
    def config(self) -> ProcessorConfig:
        """The processor configuration."""
        return self._config

    @property
    def lanes(self) -> int:
        """``P``: weights multiplied per cycle, ``min(fc_threads, beat bytes)``."""
        return min(self._config.fc_threads, self._config.beat_bytes // self._config.element_bytes)

    #: Cycles beyond the pieces: handshake, 3 pipeline stages to the row sum, the lane write.
    FIXED_CYCLES = 1 + 1 + DotProductInt8.LATENCY + 1

    def cycles(self, n_out: int, n_in: int) -> int:
        """Cycles of an FC instruction from its handshake to the next possible one, if weights never run dry.

        ``n_out * n_in * conv_ic_lanes / P + 5``.
        """
        return n_out * n_in * self._config.conv_ic_lanes // self.lanes + self.FIXED_CYCLES

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        P = self.lanes
        groups = cfg.conv_ic_lanes // P              # pieces per input entry
        pieces_per_beat = cfg.beat_bytes // P
        inp_bits, acc_bits = cfg.input_addr_bits, cfg.acc_addr_bits
        lane_bits = (cfg.conv_oc_lanes - 1).bit_length()
        fc = data.View(self._isa.layout(Opcode.FC), self.cmd.payload)
        piece_layout = data.ArrayLayout(signed(8), P)

        # ------------------------------------------------------------------ instruction registers
        accumulate = Signal()
        inp_base, acc_base = Signal(inp_bits), Signal(acc_bits)
        last_entry = Signal(inp_bits + 1)   # n_in - 1
        last_row = Signal(16)               # n_out - 1
        running = Signal()
        group = Signal(range(groups))       # piece within the input entry
        entry = Signal(inp_bits + 1)        # input entry within the row
        inp_addr = Signal(inp_bits)
        row = Signal(16)

        # ------------------------------------------------------------------ the held beat
        beat = Signal(cfg.axi_data_width)
        beat_full = Signal()
        piece_in_beat = group[:(pieces_per_beat - 1).bit_length()] if pieces_per_beat > 1 else Const(0, 1)
        issue = running & beat_full
        consume = issue & (piece_in_beat == pieces_per_beat - 1)
        m.d.comb += self.weights.ready.eq(~beat_full | consume)
        with m.If(self.weights.valid & self.weights.ready):
            m.d.sync += [beat.eq(self.weights.payload), beat_full.eq(1)]
        with m.Elif(consume):
            m.d.sync += beat_full.eq(0)

        # ------------------------------------------------------------------ pipeline registers
        ctl_layout = data.StructLayout({"valid": 1, "first": 1, "last": 1, "row": 16})
        s1 = Signal(ctl_layout)
        s1_group = Signal(range(groups))
        s1_piece = Signal(piece_layout)
        delayed = [Signal(ctl_layout, name=f"dot_ctl{k}") for k in range(DotProductInt8.LATENCY)]
        row_sum = Signal(signed(32))
        wr_valid, wr_sum = Signal(), Signal(signed(32))
        wr_entry, wr_lane = Signal(acc_bits), Signal(max(1, lane_bits))

        busy = running | s1.valid | wr_valid
        for stage in delayed:
            busy = busy | stage.valid
        m.d.comb += [self.busy.eq(busy), self.cmd.ready.eq(~busy)]

        # ------------------------------------------------------------------ accept a command
        with m.If(self.cmd.valid & self.cmd.ready & (fc.opcode == Opcode.FC)):
            m.d.sync += [
                accumulate.eq(fc.accumulate), inp_base.eq(fc.inp_base), acc_base.eq(fc.acc_base),
                last_entry.eq(fc.n_in - 1), last_row.eq(fc.n_out - 1),
                group.eq(0), entry.eq(0), inp_addr.eq(fc.inp_base), row.eq(0), running.eq(1),
            ]

        # ------------------------------------------------------------------ issue one piece per cycle
        row_done = (entry == last_entry) & (group == groups - 1)
        m.d.comb += [self.inp_rd.addr.eq(inp_addr), self.inp_rd.en.eq(issue)]
        m.d.sync += [
            s1.valid.eq(issue), s1.first.eq((entry == 0) & (group == 0)), s1.last.eq(row_done), s1.row.eq(row),
            s1_group.eq(group), s1_piece.eq(beat.word_select(piece_in_beat, 8 * P)),
        ]
        with m.If(issue):
            with m.If(group != groups - 1):
                m.d.sync += group.eq(group + 1)
            with m.Else():
                m.d.sync += group.eq(0)
                with m.If(entry != last_entry):
                    m.d.sync += [entry.eq(entry + 1), inp_addr.eq(inp_addr + 1)]
                with m.Else():
                    m.d.sync += [entry.eq(0), inp_addr.eq(inp_base), row.eq(row + 1)]
                    with m.If(row == last_row):
                        m.d.sync += running.eq(0)

        # ------------------------------------------------------------------ multiply and sum the piece
        m.submodules.dot = dot = DotProductInt8(lanes=P)
        entry_groups = data.View(data.ArrayLayout(piece_layout, groups), self.inp_rd.data)
        m.d.comb += [dot.a.eq(s1_piece), dot.b.eq(entry_groups[s1_group])]
        m.d.sync += delayed[0].eq(s1)
        for k in range(1, len(delayed)):
            m.d.sync += delayed[k].eq(delayed[k - 1])
        ctl = delayed[-1]

        # ------------------------------------------------------------------ the row accumulator
        total = Signal(signed(32))
        m.d.comb += total.eq(Mux(ctl.first, 0, row_sum) + dot.sum)
        with m.If(ctl.valid):
            m.d.sync += row_sum.eq(total)
        row_entry = Signal(acc_bits)
        m.d.comb += row_entry.eq(acc_base + (ctl.row >> lane_bits))
        m.d.comb += [self.acc_rd.addr.eq(row_entry), self.acc_rd.en.eq(ctl.valid & ctl.last)]
        m.d.sync += [wr_valid.eq(ctl.valid & ctl.last), wr_sum.eq(total), wr_entry.eq(row_entry),
                     wr_lane.eq(ctl.row[:lane_bits] if lane_bits else 0)]

        # ------------------------------------------------------------------ write one accumulator lane
        old = data.View(acc_entry_layout(cfg), self.acc_rd.data)[wr_lane]
        result = Signal(signed(32))
        m.d.comb += result.eq(wr_sum + Mux(accumulate, old, 0))
        lane_enable = Signal(unsigned(cfg.conv_oc_lanes))
        m.d.comb += lane_enable.eq(Const(1, cfg.conv_oc_lanes) << wr_lane)
        m.d.comb += [
            self.acc_wr.addr.eq(wr_entry), self.acc_wr.data.eq(Cat(*(result for _ in range(cfg.conv_oc_lanes)))),
            self.acc_wr.en.eq(Mux(wr_valid, lane_enable, 0)),
        ]
        return m
