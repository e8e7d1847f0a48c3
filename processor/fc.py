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

The fp32 unit (binary32 weights, ``P = min(fc_threads, beat bytes / 4)``) cannot add one piece per cycle into a
single row sum: the adder takes ``L = FpAdd.LATENCY`` cycles. It keeps ``L`` partial sums instead, in the adder's
own pipeline (a ring: the adder's output is fed back as its second operand, and the ring only moves when an entry
arrives, so piece ``j`` of a row always lands in partial ``j % L`` whatever the weight stream's stalls)::

    t      issue: a piece (or a padding entry, or a drain entry), input read address
    t+1    input data -> DotProductFp32 (FpMul, FpAdd tree; latency D)
    t+1+D  ring advance: partial[j % L] += piece (-0 restarts a partial: it is the identity of the addition);
           the first L advances of a row hand the previous row's L partials to the collector
    +1     FpTreeSum over the L partials (latency T)
    +T     accumulator read address; then FpAdd(old lane if accumulate else -0, row sum) and the lane write

Rows are padded with ``-0`` entries to a multiple of ``L`` advances, and ``L`` drain entries after the last row
push its partials out. This defines the summation order the golden model reproduces (``docs/numerics.md``).
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, EnableInserter, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .buffers import acc_entry_layout, buffer_geometry
from .config import ProcessorConfig
from .engine import DotProductFp32, DotProductInt8
from .fp32 import NEG_ZERO, FpAdd, FpTreeSum
from .isa import INSTRUCTION_BITS, InstructionSet, Opcode

__all__ = ["FcUnit"]


class FcUnit(wiring.Component):
    """Executes FC instructions on a stream of weight beats, one piece of ``P`` weights per cycle.

    Parameters
    ----------
    config : ProcessorConfig
        The processor configuration (int8 or binary32 arithmetic).

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

    #: Cycles beyond the pieces (int8): handshake, 3 pipeline stages to the row sum, the lane write.
    FIXED_CYCLES = 1 + 1 + DotProductInt8.LATENCY + 1

    #: Partial sums of an fp32 row (the depth of the ring adder).
    PARTIAL_SUMS = FpAdd.LATENCY

    def cycles(self, n_out: int, n_in: int) -> int:
        """Cycles of an FC instruction from its handshake to the next possible one, if weights never run dry
        (see :meth:`cycles_for`)."""
        return self.cycles_for(self._config, n_out, n_in)

    @classmethod
    def cycles_for(cls, config: ProcessorConfig, n_out: int, n_in: int) -> int:
        """Cycles of an FC instruction on ``config`` without building the unit (used by the performance estimate).

        int8: ``n_out * n_in * conv_ic_lanes / P + 5``. fp32: every row takes its pieces rounded up to a multiple of
        ``L`` (:attr:`PARTIAL_SUMS`), then ``L`` drain entries and the pipeline (dot product, partial-sum tree, the
        accumulating adder).
        """
        lanes = min(config.fc_threads, config.beat_bytes // config.element_bytes)
        pieces = n_in * config.conv_ic_lanes // lanes
        if config.dtype == "int8":
            return n_out * pieces + cls.FIXED_CYCLES
        L = cls.PARTIAL_SUMS
        entries = n_out * (-(-pieces // L) * L) + L
        # handshake, input read, dot product, partials register, tree, accumulator read, accumulating adder
        fixed = 1 + 1 + DotProductFp32.latency_for(lanes) + 1 + FpTreeSum.latency_for(L) + 1 + FpAdd.LATENCY
        return entries + fixed

    # ------------------------------------------------------------------ control shared by both number formats
    def _control(self, m: Module, element_bits: int) -> SimpleNamespace:
        """The instruction registers, the held weight beat and the piece/entry counters of both formats.

        Returns the registers (``accumulate, inp_base, acc_base, last_entry, last_row, running, group, entry,
        inp_addr, row``), the FC view ``fc``, the ``accept`` condition of a command, the beat with the current piece
        (``beat``, ``piece_in_beat``, ``beat_full``) and the geometry (``P``, ``groups``, ``pieces_per_beat``,
        ``piece_layout``, ``lane_bits``, ``acc_bits``). The caller sets ``weights.ready`` with :meth:`_consume`.
        """
        cfg = self._config
        c = SimpleNamespace()
        c.P = P = self.lanes
        c.groups = cfg.conv_ic_lanes // P                      # pieces per input entry
        c.pieces_per_beat = cfg.axi_data_width // (element_bits * P)
        inp_bits, c.acc_bits = cfg.input_addr_bits, cfg.acc_addr_bits
        c.lane_bits = (cfg.conv_oc_lanes - 1).bit_length()
        c.fc = fc = data.View(self._isa.layout(Opcode.FC), self.cmd.payload)
        c.piece_layout = data.ArrayLayout(signed(8) if element_bits == 8 else unsigned(32), P)
        c.element_bits = element_bits

        # instruction registers
        c.accumulate = Signal()
        c.inp_base, c.acc_base = Signal(inp_bits), Signal(c.acc_bits)
        c.last_entry = Signal(inp_bits + 1)        # n_in - 1
        c.last_row = Signal(fc.n_out.shape())      # n_out - 1
        c.running = Signal()
        c.group = Signal(range(c.groups))          # piece within the input entry
        c.entry = Signal(inp_bits + 1)             # input entry within the row
        c.inp_addr = Signal(inp_bits)
        c.row = Signal(fc.n_out.shape())
        c.accept = self.cmd.valid & self.cmd.ready & (fc.opcode == Opcode.FC)
        with m.If(c.accept):
            m.d.sync += [
                c.accumulate.eq(fc.accumulate), c.inp_base.eq(fc.inp_base), c.acc_base.eq(fc.acc_base),
                c.last_entry.eq(fc.n_in - 1), c.last_row.eq(fc.n_out - 1),
                c.group.eq(0), c.entry.eq(0), c.inp_addr.eq(fc.inp_base), c.row.eq(0), c.running.eq(1),
            ]
        c.row_done = (c.entry == c.last_entry) & (c.group == c.groups - 1)

        # the held beat
        c.beat = Signal(cfg.axi_data_width)
        c.beat_full = Signal()
        c.piece_in_beat = (c.group[:(c.pieces_per_beat - 1).bit_length()] if c.pieces_per_beat > 1
                           else Const(0, 1))
        return c

    def _consume(self, m: Module, c: SimpleNamespace, issue) -> None:
        """A piece of the held beat issues with ``issue``: take the next beat, and step the piece/entry counters."""
        consume = issue & (c.piece_in_beat == c.pieces_per_beat - 1)
        m.d.comb += self.weights.ready.eq(~c.beat_full | consume)
        with m.If(self.weights.valid & self.weights.ready):
            m.d.sync += [c.beat.eq(self.weights.payload), c.beat_full.eq(1)]
        with m.Elif(consume):
            m.d.sync += c.beat_full.eq(0)
        m.d.comb += [self.inp_rd.addr.eq(c.inp_addr), self.inp_rd.en.eq(issue)]
        with m.If(issue):
            with m.If(c.group != c.groups - 1):
                m.d.sync += c.group.eq(c.group + 1)
            with m.Else():
                m.d.sync += c.group.eq(0)
                with m.If(c.entry != c.last_entry):
                    m.d.sync += [c.entry.eq(c.entry + 1), c.inp_addr.eq(c.inp_addr + 1)]
                with m.Else():
                    m.d.sync += [c.entry.eq(0), c.inp_addr.eq(c.inp_base)]

    def _dot(self, m: Module, c: SimpleNamespace, dot, s1, s1_group, s1_piece, ctl_layout) -> list:
        """The dot product of the piece issued last cycle with its input entry; returns the control registers
        delayed by the dot product's latency (``[]`` when it has none)."""
        entry_groups = data.View(data.ArrayLayout(c.piece_layout, c.groups), self.inp_rd.data)
        m.d.comb += [dot.a.eq(s1_piece), dot.b.eq(entry_groups[s1_group])]
        delayed = [Signal(ctl_layout, name=f"dot_ctl{k}") for k in range(dot.LATENCY)]
        if delayed:
            m.d.sync += delayed[0].eq(s1)
            for k in range(1, len(delayed)):
                m.d.sync += delayed[k].eq(delayed[k - 1])
        return delayed

    def _write_lane(self, m: Module, entry, lane, value, valid) -> None:
        """Write ``value`` into lane ``lane`` of accumulator entry ``entry`` when ``valid``."""
        cfg = self._config
        lane_enable = Signal(unsigned(cfg.conv_oc_lanes))
        m.d.comb += lane_enable.eq(Const(1, cfg.conv_oc_lanes) << lane)
        m.d.comb += [
            self.acc_wr.addr.eq(entry), self.acc_wr.data.eq(Cat(*(value for _ in range(cfg.conv_oc_lanes)))),
            self.acc_wr.en.eq(Mux(valid, lane_enable, 0)),
        ]

    def elaborate(self, platform):
        if self._config.dtype == "fp32":
            return self._elaborate_fp32()
        m = Module()
        cfg = self._config
        c = self._control(m, 8)
        lane_bits, acc_bits = c.lane_bits, c.acc_bits

        # ------------------------------------------------------------------ issue one piece per cycle
        issue = c.running & c.beat_full
        self._consume(m, c, issue)
        with m.If(issue & c.row_done):
            m.d.sync += c.row.eq(c.row + 1)
            with m.If(c.row == c.last_row):
                m.d.sync += c.running.eq(0)
        ctl_layout = data.StructLayout({"valid": 1, "first": 1, "last": 1, "row": c.fc.n_out.shape()})
        s1 = Signal(ctl_layout)
        s1_group = Signal(range(c.groups))
        s1_piece = Signal(c.piece_layout)
        m.d.sync += [
            s1.valid.eq(issue), s1.first.eq((c.entry == 0) & (c.group == 0)), s1.last.eq(c.row_done),
            s1.row.eq(c.row), s1_group.eq(c.group), s1_piece.eq(c.beat.word_select(c.piece_in_beat, 8 * c.P)),
        ]

        # ------------------------------------------------------------------ multiply and sum the piece
        m.submodules.dot = dot = DotProductInt8(lanes=c.P)
        delayed = self._dot(m, c, dot, s1, s1_group, s1_piece, ctl_layout)
        ctl = delayed[-1]

        # ------------------------------------------------------------------ the row accumulator
        row_sum = Signal(signed(32))
        total = Signal(signed(32))
        m.d.comb += total.eq(Mux(ctl.first, 0, row_sum) + dot.sum)
        with m.If(ctl.valid):
            m.d.sync += row_sum.eq(total)
        row_entry = Signal(acc_bits)
        m.d.comb += row_entry.eq(c.acc_base + (ctl.row >> lane_bits))
        m.d.comb += [self.acc_rd.addr.eq(row_entry), self.acc_rd.en.eq(ctl.valid & ctl.last)]
        wr_valid, wr_sum = Signal(), Signal(signed(32))
        wr_entry, wr_lane = Signal(acc_bits), Signal(max(1, lane_bits))
        m.d.sync += [wr_valid.eq(ctl.valid & ctl.last), wr_sum.eq(total), wr_entry.eq(row_entry),
                     wr_lane.eq(ctl.row[:lane_bits] if lane_bits else 0)]

        # ------------------------------------------------------------------ write one accumulator lane
        old = data.View(acc_entry_layout(cfg), self.acc_rd.data)[wr_lane]
        result = Signal(signed(32))
        m.d.comb += result.eq(wr_sum + Mux(c.accumulate, old, 0))
        self._write_lane(m, wr_entry, wr_lane, result, wr_valid)

        busy = c.running | s1.valid | wr_valid
        for stage in delayed:
            busy = busy | stage.valid
        m.d.comb += [self.busy.eq(busy), self.cmd.ready.eq(~busy)]
        return m

    def _elaborate_fp32(self):
        m = Module()
        cfg = self._config
        L = self.PARTIAL_SUMS
        c = self._control(m, 32)
        lane_bits, acc_bits = c.lane_bits, c.acc_bits
        prev_row = Signal(c.fc.n_out.shape())  # the row whose partials the head of this row collects
        first_row = Signal()                # no previous row to collect
        slot = Signal(range(L))             # partial sum of the next entry
        head = Signal()                     # the next entry is among the first L of its row
        padding = Signal()                  # the row's pieces are done: pad to a multiple of L
        draining = Signal()                 # after the last row: L entries push its partials out
        with m.If(c.accept):
            m.d.sync += [first_row.eq(1), slot.eq(0), head.eq(1), padding.eq(0), draining.eq(0)]

        # ------------------------------------------------------------------ issue one entry per cycle
        real = c.running & ~padding & ~draining & c.beat_full   # a piece of weights issues
        filler = c.running & (padding | draining)              # a padding or drain entry issues
        advance = real | filler
        self._consume(m, c, real)
        ctl_layout = data.StructLayout({"valid": 1, "pad": 1, "head": 1, "collect": 1, "last_slot": 1,
                                        "row": c.fc.n_out.shape()})
        s1 = Signal(ctl_layout)
        s1_group = Signal(range(c.groups))
        s1_piece = Signal(c.piece_layout)
        slot_wraps = slot == L - 1
        m.d.sync += [
            s1.valid.eq(advance), s1.pad.eq(~real), s1.head.eq(head | draining),
            s1.collect.eq((head & ~first_row) | draining), s1.last_slot.eq(slot_wraps), s1.row.eq(prev_row),
            s1_group.eq(c.group), s1_piece.eq(c.beat.word_select(c.piece_in_beat, 32 * c.P)),
        ]

        def next_row() -> None:
            # the row (its pieces and padding) is complete: start the next one, or drain after the last
            m.d.sync += [prev_row.eq(c.row), first_row.eq(0), head.eq(1), padding.eq(0)]
            with m.If(c.row == c.last_row):
                m.d.sync += draining.eq(1)
            with m.Else():
                m.d.sync += c.row.eq(c.row + 1)

        with m.If(advance):
            m.d.sync += slot.eq(Mux(slot_wraps, 0, slot + 1))
            with m.If(slot_wraps):
                m.d.sync += head.eq(0)
        with m.If(real & c.row_done):
            with m.If(slot_wraps):
                next_row()
            with m.Else():
                m.d.sync += padding.eq(1)
        with m.Elif(filler & slot_wraps):
            with m.If(draining):
                m.d.sync += [c.running.eq(0), draining.eq(0)]
            with m.Else():
                next_row()

        # ------------------------------------------------------------------ multiply and sum the piece
        m.submodules.dot = dot = DotProductFp32(lanes=c.P)
        delayed = self._dot(m, c, dot, s1, s1_group, s1_piece, ctl_layout)
        ctl = delayed[-1] if delayed else s1

        # ------------------------------------------------------------------ the ring of L partial sums
        ring = FpAdd()
        m.submodules.ring = EnableInserter(ctl.valid)(ring)
        m.d.comb += [ring.a.eq(Mux(ctl.pad, NEG_ZERO, dot.sum)), ring.b.eq(Mux(ctl.head, NEG_ZERO, ring.y))]

        # ------------------------------------------------------------------ collect the previous row's partials
        held = [Signal(32, name=f"held{k}") for k in range(L - 1)]
        with m.If(ctl.valid & ctl.collect & ~ctl.last_slot):
            m.d.sync += held[0].eq(ring.y) if L > 1 else []
            for k in range(1, L - 1):
                m.d.sync += held[k].eq(held[k - 1])
        m.submodules.tree = tree = FpTreeSum(terms=L)
        tree_valid, tree_row = Signal(), Signal(c.fc.n_out.shape())
        partials = Signal(data.ArrayLayout(32, L))
        # held[-1] is the oldest (slot 0); the current ring output is slot L-1
        m.d.sync += [partials[k].eq(held[L - 2 - k]) for k in range(L - 1)]
        m.d.sync += [partials[L - 1].eq(ring.y), tree_valid.eq(ctl.valid & ctl.collect & ctl.last_slot),
                     tree_row.eq(ctl.row)]
        m.d.comb += tree.t.eq(partials)
        sum_valid = tree_valid
        sum_row = tree_row
        in_flight = [tree_valid]
        for k in range(tree.LATENCY):
            v, r = Signal(name=f"tree_valid{k}"), Signal(c.fc.n_out.shape(), name=f"tree_row{k}")
            m.d.sync += [v.eq(sum_valid), r.eq(sum_row)]
            sum_valid, sum_row = v, r
            in_flight.append(v)

        # ------------------------------------------------------------------ accumulate and write one lane
        row_entry = Signal(acc_bits)
        m.d.comb += row_entry.eq(c.acc_base + (sum_row >> lane_bits))
        m.d.comb += [self.acc_rd.addr.eq(row_entry), self.acc_rd.en.eq(sum_valid)]
        rd_valid, rd_sum = Signal(), Signal(32)
        rd_entry, rd_lane = Signal(acc_bits), Signal(max(1, lane_bits))
        m.d.sync += [rd_valid.eq(sum_valid), rd_sum.eq(tree.sum), rd_entry.eq(row_entry),
                     rd_lane.eq(sum_row[:lane_bits] if lane_bits else 0)]
        old = data.View(acc_entry_layout(cfg), self.acc_rd.data)[rd_lane]
        m.submodules.acc_add = acc_add = FpAdd()
        m.d.comb += [acc_add.a.eq(Mux(c.accumulate, old, NEG_ZERO)), acc_add.b.eq(rd_sum)]
        wr_valid, wr_entry, wr_lane = rd_valid, rd_entry, rd_lane
        for k in range(FpAdd.LATENCY):
            v, e, la = Signal(name=f"wr_valid{k}"), Signal(acc_bits, name=f"wr_entry{k}"), \
                Signal(max(1, lane_bits), name=f"wr_lane{k}")
            m.d.sync += [v.eq(wr_valid), e.eq(wr_entry), la.eq(wr_lane)]
            wr_valid, wr_entry, wr_lane = v, e, la
            in_flight.append(v)
        self._write_lane(m, wr_entry, wr_lane, acc_add.y, wr_valid)

        # ------------------------------------------------------------------ busy
        busy = c.running | s1.valid | rd_valid
        for stage in delayed:
            busy = busy | stage.valid
        for valid in in_flight:
            busy = busy | valid
        m.d.comb += [self.busy.eq(busy), self.cmd.ready.eq(~busy)]
        return m
