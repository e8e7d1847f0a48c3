"""Legality check of one instruction word, as combinational logic.

The dispatcher runs every fetched word through :class:`InstructionChecker` before issuing it. The rules are those
of the golden model (``dlproc.sim.golden``): an opcode of 0 or 9-15 is ``ILLEGAL_OPCODE``; a zero loop extent, a
buffer range past the end of its buffer, a DDR address, stride or length that is not a multiple of the AXI beat,
a sub-block range past the output entry, or a buffer/mode value that does not exist is ``ILLEGAL_FIELD``.
Whether a DDR access falls inside the window is not a property of the word alone (it depends on ``DDR_SIZE`` and
on the chunk being transferred); the DMA engine checks that before it issues each access.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import ProcessorConfig
from .isa import INSTRUCTION_BITS, Buffer, ErrorCode, GemmMode, InstructionSet, Opcode, opcode_of

__all__ = ["InstructionChecker", "ERROR_CODE_SHAPE"]

#: Shape of an :class:`~dlproc.processor.isa.ErrorCode` value inside the gateware.
ERROR_CODE_SHAPE = unsigned(4)


def _log2(value: int) -> int:
    assert value > 0 and value & (value - 1) == 0, value
    return value.bit_length() - 1


class InstructionChecker(wiring.Component):
    """Decides whether a 256-bit instruction word may be executed.

    Parameters
    ----------
    config : ProcessorConfig
        Supplies the buffer depths and the AXI beat size the rules refer to.

    Members
    -------
    word : In(256)
        The instruction word.
    legal : Out(1)
        High when the word is an instruction the processor executes.
    error : Out(4)
        :class:`~dlproc.processor.isa.ErrorCode` of an illegal word (``ILLEGAL_OPCODE`` or ``ILLEGAL_FIELD``);
        ``NONE`` when ``legal``.
    """

    def __init__(self, *, config: ProcessorConfig):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
        self._config = config
        self._isa = InstructionSet(config)
        super().__init__({"word": In(INSTRUCTION_BITS), "legal": Out(1), "error": Out(ERROR_CODE_SHAPE)})

    @property
    def config(self) -> ProcessorConfig:
        """The processor configuration."""
        return self._config

    def elaborate(self, platform):
        m = Module()
        c, isa = self._config, self._isa
        beat_log2 = _log2(c.beat_bytes)

        def view(op):
            return data.View(isa.layout(op), self.word)

        def beat_aligned(value):
            return value[:beat_log2] == 0 if beat_log2 else 1

        def field_ok(name, expr):
            sig = Signal(name=name)
            m.d.comb += sig.eq(expr)
            return sig

        # LOAD: the chunk lengths fill buf[buf_addr * entry_bytes : + n1 * n2 * len0] of the chosen buffer.
        ld = view(Opcode.LOAD)
        total = ld.n1 * ld.n2 * ld.len0
        fits = {}
        for buf, entry_bytes, entries in ((Buffer.INPUT, c.input_entry_bytes, c.input_entries),
                                          (Buffer.WEIGHT, c.weight_entry_bytes, c.weight_entries),
                                          (Buffer.PARAM, c.param_entry_bytes, c.param_buffer_entries)):
            start = ld.buf_addr << _log2(entry_bytes)
            fits[buf] = start + total <= entries * entry_bytes
        load_ok = field_ok("load_ok",
                           (ld.buffer <= Buffer.PARAM)
                           & (ld.n1 != 0) & (ld.n2 != 0) & (ld.len0 != 0)
                           & beat_aligned(ld.len0) & beat_aligned(ld.ddr_addr)
                           & beat_aligned(ld.ddr_stride1) & beat_aligned(ld.ddr_stride2)
                           & Mux(ld.buffer == Buffer.INPUT, fits[Buffer.INPUT],
                                 Mux(ld.buffer == Buffer.WEIGHT, fits[Buffer.WEIGHT], fits[Buffer.PARAM])))

        # STORE: output entries buf_addr + i1 * buf_stride1 + [0, n0) and sub-blocks sb0 + [0, n2).
        st = view(Opcode.STORE)
        st_last = st.buf_addr + (st.n1 - 1) * st.buf_stride1 + st.n0 - 1
        store_ok = field_ok("store_ok",
                            (st.n0 != 0) & (st.n1 != 0) & (st.n2 != 0)
                            & (st.sb0 + st.n2 <= c.subblocks_per_output)
                            & beat_aligned(st.ddr_addr) & beat_aligned(st.ddr_stride1) & beat_aligned(st.ddr_stride2)
                            & (st_last < c.acc_buffer_entries))

        # GEMM: the last input entry read is inp_base + sum((n - 1) * stride) over the five loops.
        gm = view(Opcode.GEMM)
        loops = ((gm.r0, gm.ri0), (gm.r1, gm.ri1), (gm.r2, gm.ri2), (gm.s0, gm.si0), (gm.s1, gm.si1))
        inp_last = gm.inp_base
        for n, stride in loops:
            inp_last = inp_last + (n - 1) * stride
        reduction = gm.r0 * gm.r1 * gm.r2
        spatial = gm.s0 * gm.s1
        gemm_ok = field_ok("gemm_ok",
                           (gm.mode <= GemmMode.SUM)
                           & (gm.r0 != 0) & (gm.r1 != 0) & (gm.r2 != 0) & (gm.s0 != 0) & (gm.s1 != 0)
                           & (inp_last < c.input_entries)
                           & (gm.acc_base + spatial <= c.acc_buffer_entries)
                           & (~gm.finalize | (gm.out_base + spatial <= c.acc_buffer_entries))
                           & ((gm.mode != GemmMode.MAC) | (gm.wgt_base + reduction <= c.weight_entries)))

        # POST: n accumulator entries, n output entries, n parameter entries (1 without param_inc).
        po = view(Opcode.POST)
        post_ok = field_ok("post_ok",
                           (po.n != 0)
                           & (po.acc_base + po.n <= c.acc_buffer_entries)
                           & (po.out_base + po.n <= c.acc_buffer_entries)
                           & (po.param_addr + Mux(po.param_inc, po.n, 1) <= c.param_buffer_entries))

        # FC: n_in input entries; n_out accumulator lanes packed conv_oc_lanes per entry.
        fc = view(Opcode.FC)
        fc_ok = field_ok("fc_ok",
                         (fc.n_out != 0) & (fc.n_in != 0)
                         & (fc.inp_base + fc.n_in <= c.input_entries)
                         & (fc.acc_base + ((fc.n_out - 1) >> _log2(c.conv_oc_lanes)) < c.acc_buffer_entries)
                         & beat_aligned(fc.ddr_addr) & beat_aligned(fc.row_stride))

        opcode = opcode_of(self.word)
        with m.Switch(opcode):
            for op, ok in ((Opcode.LOAD, load_ok), (Opcode.STORE, store_ok), (Opcode.GEMM, gemm_ok),
                           (Opcode.POST, post_ok), (Opcode.FC, fc_ok)):
                with m.Case(op):
                    m.d.comb += [self.legal.eq(ok), self.error.eq(Mux(ok, ErrorCode.NONE, ErrorCode.ILLEGAL_FIELD))]
            with m.Case(Opcode.SYNC, Opcode.MARK, Opcode.END):
                m.d.comb += [self.legal.eq(1), self.error.eq(ErrorCode.NONE)]
            with m.Default():
                m.d.comb += [self.legal.eq(0), self.error.eq(ErrorCode.ILLEGAL_OPCODE)]
        return m
