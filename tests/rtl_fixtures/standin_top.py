"""A stand-in for the processor's top level, with exactly its ports, to test the Verilator harness.

:class:`StandInTop` has the ports of ``dlproc.processor.top.DLProcessor`` (``s_axil``, ``m_axi``, ``irq``, plus
the ``sync`` domain's ``clk``/``rst``) but does something much simpler: on START it copies ``LEN`` bytes from
window offset ``SRC`` to window offset ``DST`` through the AXI4 master, one INCR burst of up to 16 beats at a time
(read a burst into a small buffer, write it back), then raises DONE (or ERROR on a non-OKAY response).

Two deliberate protocol faults can be switched on through ``FLAGS`` so the tests can check that the harness's
DDR model notices them: bit 0 ignores the AXI rule that a burst must not cross a 4 KiB boundary, bit 1 never
asserts ``wlast``.
"""

from __future__ import annotations

import enum

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from dlproc.processor.axi import BURST_INCR, RESP_OKAY, RESP_SLVERR, Axi4Signature, AxiLiteSignature
from dlproc.processor.config import ProcessorConfig
from dlproc.processor.isa import CTRL_CLEAR, CTRL_IRQ_EN, CTRL_START, ErrorCode, Reg

__all__ = ["StandInTop", "StandInReg", "STANDIN_MAGIC", "MAX_BURST_BEATS", "FLAG_IGNORE_4K", "FLAG_NO_WLAST"]

#: Value of the MAGIC register of the stand-in ("STND"), distinct from the processor's.
STANDIN_MAGIC = 0x53544E44
#: Longest burst the stand-in issues (depth of its beat buffer).
MAX_BURST_BEATS = 16
FLAG_IGNORE_4K = 1 << 0
FLAG_NO_WLAST = 1 << 1


class StandInReg(enum.IntEnum):
    """Registers of the stand-in beyond the processor's shared ones (MAGIC, CTRL, STATUS, ERROR_CODE, ...)."""

    SRC = 0x80      #: RW source byte offset in the DDR window (beat aligned)
    DST = 0x84      #: RW destination byte offset (beat aligned)
    LEN = 0x88      #: RW bytes to copy (multiple of the beat)
    FLAGS = 0x8C    #: RW FLAG_IGNORE_4K | FLAG_NO_WLAST
    SCRATCH = 0x90  #: RW no function


class StandInTop(wiring.Component):
    """Register block plus a burst copy engine behind the processor's ports.

    Parameters
    ----------
    config : ProcessorConfig
        Supplies the AXI4 master's address and data widths.
    """

    def __init__(self, config: ProcessorConfig):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
        self.config = config
        super().__init__({
            "s_axil": In(AxiLiteSignature()),
            "m_axi": Out(Axi4Signature(addr_width=config.axi_addr_width, data_width=config.axi_data_width,
                                       id_width=4)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        beat_bytes = cfg.beat_bytes
        size_log2 = beat_bytes.bit_length() - 1
        lite, axi = self.s_axil, self.m_axi

        # ------------------------------------------------------------------ registers
        busy, done, error = Signal(), Signal(), Signal()
        irq_en = Signal()
        error_code = Signal(4)
        ddr_base = Signal(64)
        src, dst, length = Signal(32), Signal(32), Signal(32)
        flags, scratch = Signal(2), Signal(32)
        cycles = Signal(64)
        start = Signal()

        m.d.comb += self.irq.eq((done | error) & irq_en)
        with m.If(busy):
            m.d.sync += cycles.eq(cycles + 1)

        readable = {
            Reg.MAGIC: Const(STANDIN_MAGIC, 32), Reg.CTRL: Cat(Const(0, 2), irq_en),
            Reg.STATUS: Cat(busy, done, error), Reg.ERROR_CODE: error_code,
            Reg.DDR_BASE_LO: ddr_base[:32], Reg.DDR_BASE_HI: ddr_base[32:],
            Reg.CYCLES_LO: cycles[:32], Reg.CYCLES_HI: cycles[32:],
            StandInReg.SRC: src, StandInReg.DST: dst, StandInReg.LEN: length, StandInReg.FLAGS: flags,
            StandInReg.SCRATCH: scratch,
        }

        # AXI4-Lite write: take address and data together, answer with B before the next write.
        m.d.comb += [lite.awready.eq(lite.awvalid & lite.wvalid & ~lite.bvalid),
                     lite.wready.eq(lite.awvalid & lite.wvalid & ~lite.bvalid)]
        with m.If(lite.bvalid & lite.bready):
            m.d.sync += lite.bvalid.eq(0)
        with m.If(lite.awready):
            m.d.sync += [lite.bvalid.eq(1), lite.bresp.eq(RESP_OKAY)]
            wdata = lite.wdata
            with m.Switch(lite.awaddr[2:]):
                with m.Case(Reg.CTRL >> 2):
                    m.d.sync += irq_en.eq(wdata & CTRL_IRQ_EN != 0)
                    with m.If(wdata & CTRL_CLEAR != 0):
                        m.d.sync += [done.eq(0), error.eq(0), error_code.eq(0)]
                    with m.If((wdata & CTRL_START != 0) & ~busy):
                        m.d.comb += start.eq(1)
                for reg, sig in ((Reg.DDR_BASE_LO, ddr_base[:32]), (Reg.DDR_BASE_HI, ddr_base[32:]),
                                 (StandInReg.SRC, src), (StandInReg.DST, dst), (StandInReg.LEN, length),
                                 (StandInReg.FLAGS, flags), (StandInReg.SCRATCH, scratch)):
                    with m.Case(reg >> 2):
                        m.d.sync += sig.eq(wdata)
                with m.Default():
                    m.d.sync += lite.bresp.eq(RESP_SLVERR)

        # AXI4-Lite read: one outstanding read; unmapped offsets answer SLVERR.
        m.d.comb += lite.arready.eq(~lite.rvalid)
        with m.If(lite.rvalid & lite.rready):
            m.d.sync += lite.rvalid.eq(0)
        with m.If(lite.arvalid & lite.arready):
            m.d.sync += [lite.rvalid.eq(1), lite.rresp.eq(RESP_OKAY), lite.rdata.eq(0)]
            with m.Switch(lite.araddr[2:]):
                for reg, sig in readable.items():
                    with m.Case(reg >> 2):
                        m.d.sync += lite.rdata.eq(sig)
                with m.Default():
                    m.d.sync += lite.rresp.eq(RESP_SLVERR)

        # ------------------------------------------------------------------ copy engine
        m.submodules.buf = buf = Memory(shape=cfg.axi_data_width, depth=MAX_BURST_BEATS, init=[])
        wr_port = buf.write_port()
        rd_port = buf.read_port(domain="comb")

        cur_src, cur_dst = Signal(64), Signal(64)   # physical addresses of the next burst
        remaining = Signal(32 - size_log2)           # beats still to copy
        beats = Signal(range(MAX_BURST_BEATS + 1))   # beats of the current burst
        index = Signal(range(MAX_BURST_BEATS))
        resp_err = Signal()

        def beats_to_4k(addr):
            # Beats left before the next 4 KiB boundary (1 to 4096 >> size_log2).
            to_boundary = Signal(13)
            m.d.comb += to_boundary.eq(4096 - addr[:12])
            return to_boundary >> size_log2

        def minimum(a, b):
            return Mux(a < b, a, b)

        plan = Signal.like(beats)  # beats of the next burst
        longest = minimum(remaining, MAX_BURST_BEATS)
        with m.If(flags[0]):
            m.d.comb += plan.eq(longest)
        with m.Else():
            m.d.comb += plan.eq(minimum(longest, minimum(beats_to_4k(cur_src), beats_to_4k(cur_dst))))

        m.d.comb += [
            axi.arid.eq(1), axi.araddr.eq(cur_src), axi.arlen.eq(beats - 1), axi.arsize.eq(size_log2),
            axi.arburst.eq(BURST_INCR),
            axi.awid.eq(1), axi.awaddr.eq(cur_dst), axi.awlen.eq(beats - 1), axi.awsize.eq(size_log2),
            axi.awburst.eq(BURST_INCR),
            axi.wdata.eq(rd_port.data), axi.wstrb.eq(-1),
            axi.wlast.eq((index == beats - 1) & ~flags[1]),
            rd_port.addr.eq(index),
            wr_port.addr.eq(index), wr_port.data.eq(axi.rdata),
        ]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [busy.eq(1), done.eq(0), error.eq(0), error_code.eq(0), cycles.eq(0),
                                 resp_err.eq(0), cur_src.eq(ddr_base + src), cur_dst.eq(ddr_base + dst),
                                 remaining.eq(length >> size_log2)]
                    m.next = "PLAN"
            with m.State("PLAN"):
                with m.If(remaining == 0):
                    m.d.sync += [busy.eq(0), done.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [beats.eq(plan), index.eq(0)]
                    m.next = "AR"
            with m.State("AR"):
                m.d.comb += axi.arvalid.eq(1)
                with m.If(axi.arready):
                    m.next = "R"
            with m.State("R"):
                m.d.comb += axi.rready.eq(1)
                with m.If(axi.rvalid):
                    m.d.comb += wr_port.en.eq(1)
                    m.d.sync += index.eq(index + 1)
                    with m.If(axi.rresp != RESP_OKAY):
                        m.d.sync += resp_err.eq(1)
                    with m.If(axi.rlast):
                        m.d.sync += index.eq(0)
                        with m.If(resp_err | (axi.rresp != RESP_OKAY)):
                            m.d.sync += [busy.eq(0), error.eq(1), error_code.eq(ErrorCode.AXI_READ_ERROR)]
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "AW"
            with m.State("AW"):
                m.d.comb += axi.awvalid.eq(1)
                with m.If(axi.awready):
                    m.next = "W"
            with m.State("W"):
                m.d.comb += axi.wvalid.eq(1)
                with m.If(axi.wready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == beats - 1):
                        m.next = "B"
            with m.State("B"):
                m.d.comb += axi.bready.eq(1)
                with m.If(axi.bvalid):
                    with m.If(axi.bresp != RESP_OKAY):
                        m.d.sync += [busy.eq(0), error.eq(1), error_code.eq(ErrorCode.AXI_WRITE_ERROR)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [cur_src.eq(cur_src + (beats << size_log2)),
                                     cur_dst.eq(cur_dst + (beats << size_log2)),
                                     remaining.eq(remaining - beats)]
                        m.next = "PLAN"
        return m
