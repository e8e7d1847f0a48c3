"""The control and status registers: an AXI4-Lite slave implementing the register map :class:`~.isa.Reg`.

The register file holds the run parameters the host writes (``INSTR_ADDR``, ``INSTR_COUNT``, the DDR window),
turns ``CTRL`` writes into START / CLEAR pulses for the dispatcher, shows the dispatcher's state (``STATUS``,
``ERROR_CODE``, ``ERROR_PC``, ``PC``), counts the performance counters and keeps the layer event log.

Protocol notes: AW and W are accepted independently (each into a one-entry holding register), so they may arrive
in any order or together; the write takes effect once both are held and the previous B response has been
taken. Byte strobes are honoured on the read/write registers. Reads have one outstanding transaction and one
cycle of latency. Every response is OKAY; unmapped offsets read as zero and ignore writes.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axi import RESP_OKAY, AxiLiteSignature
from .checker import ERROR_CODE_SHAPE
from .config import ISA_VERSION, ProcessorConfig
from .isa import CTRL_CLEAR, CTRL_IRQ_EN, CTRL_START, MAGIC, MARK_LAYER_BITS, Reg

__all__ = ["ControlRegisters", "EVENT_LAYER_BITS"]

#: Width of the layer id recorded by MARK (the MARK layout's ``layer`` field).
EVENT_LAYER_BITS = MARK_LAYER_BITS


class ControlRegisters(wiring.Component):
    """AXI4-Lite register file, performance counters and event log of the processor.

    Parameters
    ----------
    config : ProcessorConfig
        Supplies the reset values of the DDR window, the configuration hash and the event log depth.

    Members
    -------
    s_axil : In(AxiLiteSignature())
        The register slave.
    start, clear : Out(1)
        One-cycle pulses when the host writes CTRL with START (only while not busy) or CLEAR.
    irq_en : Out(1)
        The IRQ_EN bit of CTRL.
    instr_addr, instr_count, ddr_size : Out(32)
        The run parameters (``DDR_SIZE`` reads as written; 0 means 4 GiB to the consumers).
    ddr_base : Out(64)
        Physical base address of the DDR window.
    cycles : Out(64)
        The cycle counter (counts while ``busy``, cleared by START).
    busy, done, error : In(1)
        Dispatcher state, shown in STATUS.
    error_code : In(4)
        Shown in ERROR_CODE.
    error_pc, pc : In(32)
        Shown in ERROR_PC and PC.
    mac_active, rd_beat, wr_beat : In(1)
        Count enables of MAC_BUSY, DMA_RD_BEATS and DMA_WR_BEATS (cleared by START).
    event_valid : In(1)
        Records ``(event_layer, cycles)`` as the next event (ignored once the log is full).
    event_layer : In(16)
        Layer id of the event.
    event_truncate : In(1)
        Forget the events after the first ``event_keep`` ones (MARKs dispatched after an instruction that failed).
    event_keep : In(32)
    """

    def __init__(self, *, config: ProcessorConfig):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
        self._config = config
        super().__init__({
            "s_axil": In(AxiLiteSignature()),
            "start": Out(1), "clear": Out(1), "irq_en": Out(1),
            "instr_addr": Out(32), "instr_count": Out(32),
            "ddr_base": Out(64, init=config.ddr_base), "ddr_size": Out(32, init=config.ddr_size & 0xFFFF_FFFF),
            "cycles": Out(64),
            "busy": In(1), "done": In(1), "error": In(1), "error_code": In(ERROR_CODE_SHAPE),
            "error_pc": In(32), "pc": In(32),
            "mac_active": In(1), "rd_beat": In(1), "wr_beat": In(1),
            "event_valid": In(1), "event_layer": In(EVENT_LAYER_BITS),
            "event_truncate": In(1), "event_keep": In(32),
        })

    @property
    def config(self) -> ProcessorConfig:
        """The processor configuration."""
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        bus = self.s_axil
        depth = cfg.event_log_depth

        # ------------------------------------------------------------------ counters and event log
        mac_busy = Signal(64)
        rd_beats, wr_beats = Signal(32), Signal(32)
        event_count = Signal(range(depth + 1))
        event_index = Signal(32)

        m.submodules.events = events = Memory(shape=EVENT_LAYER_BITS + 64, depth=depth, init=[])
        ev_wr = events.write_port()
        ev_rd = events.read_port()
        m.d.comb += [
            ev_wr.addr.eq(event_count), ev_wr.data.eq(Cat(self.event_layer, self.cycles)),
            ev_wr.en.eq(self.event_valid & (event_count < depth)),
            ev_rd.addr.eq(event_index),
        ]
        with m.If(self.start):
            m.d.sync += [self.cycles.eq(0), mac_busy.eq(0), rd_beats.eq(0), wr_beats.eq(0), event_count.eq(0)]
        with m.Else():
            with m.If(self.busy):
                m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(self.mac_active):
                m.d.sync += mac_busy.eq(mac_busy + 1)
            with m.If(self.rd_beat):
                m.d.sync += rd_beats.eq(rd_beats + 1)
            with m.If(self.wr_beat):
                m.d.sync += wr_beats.eq(wr_beats + 1)
            with m.If(self.event_truncate):
                with m.If(self.event_keep < event_count):
                    m.d.sync += event_count.eq(self.event_keep)
            with m.Elif(ev_wr.en):
                m.d.sync += event_count.eq(event_count + 1)

        # ------------------------------------------------------------------ write channel
        aw_held, w_held = Signal(), Signal()
        aw_addr = Signal.like(bus.awaddr)
        w_data, w_strb = Signal(32), Signal(4)
        m.d.comb += [bus.awready.eq(~aw_held), bus.wready.eq(~w_held), bus.bresp.eq(RESP_OKAY)]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_held.eq(1), aw_addr.eq(bus.awaddr)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_held.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)

        def masked(old):
            mask = Cat(*(bit.replicate(8) for bit in w_strb))
            return (old & ~mask) | (w_data & mask)

        writable = {
            Reg.INSTR_ADDR: self.instr_addr, Reg.INSTR_COUNT: self.instr_count,
            Reg.DDR_BASE_LO: self.ddr_base[:32], Reg.DDR_BASE_HI: self.ddr_base[32:],
            Reg.DDR_SIZE: self.ddr_size, Reg.EVENT_INDEX: event_index,
        }
        write = Signal()
        m.d.comb += write.eq(aw_held & w_held & ~bus.bvalid)
        with m.If(write):
            m.d.sync += [aw_held.eq(0), w_held.eq(0), bus.bvalid.eq(1)]
            with m.Switch(aw_addr[2:]):
                with m.Case(Reg.CTRL >> 2):
                    with m.If(w_strb[0]):
                        m.d.sync += self.irq_en.eq((w_data & CTRL_IRQ_EN) != 0)
                        m.d.comb += [self.start.eq(((w_data & CTRL_START) != 0) & ~self.busy),
                                     self.clear.eq((w_data & CTRL_CLEAR) != 0)]
                for reg, sig in writable.items():
                    with m.Case(reg >> 2):
                        m.d.sync += sig.eq(masked(sig))

        # ------------------------------------------------------------------ read channel
        event_valid_sel = Signal()
        m.d.comb += event_valid_sel.eq(event_index < event_count)
        ev_layer, ev_cycle = ev_rd.data[:EVENT_LAYER_BITS], ev_rd.data[EVENT_LAYER_BITS:]
        readable = {
            Reg.MAGIC: Const(MAGIC, 32), Reg.ISA_VERSION: Const(ISA_VERSION, 32),
            Reg.CONFIG_HASH: Const(cfg.hardware_hash_int, 32),
            Reg.CTRL: Cat(Const(0, 2), self.irq_en), Reg.STATUS: Cat(self.busy, self.done, self.error),
            Reg.ERROR_CODE: self.error_code, Reg.ERROR_PC: self.error_pc, Reg.PC: self.pc,
            **writable,
            Reg.CYCLES_LO: self.cycles[:32], Reg.CYCLES_HI: self.cycles[32:],
            Reg.MAC_BUSY_LO: mac_busy[:32], Reg.MAC_BUSY_HI: mac_busy[32:],
            Reg.DMA_RD_BEATS: rd_beats, Reg.DMA_WR_BEATS: wr_beats, Reg.EVENT_COUNT: event_count,
            Reg.EVENT_ID: Mux(event_valid_sel, ev_layer, 0),
            Reg.EVENT_CYCLE_LO: Mux(event_valid_sel, ev_cycle[:32], 0),
            Reg.EVENT_CYCLE_HI: Mux(event_valid_sel, ev_cycle[32:], 0),
        }
        m.d.comb += [bus.arready.eq(~bus.rvalid), bus.rresp.eq(RESP_OKAY)]
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [bus.rvalid.eq(1), bus.rdata.eq(0)]
            with m.Switch(bus.araddr[2:]):
                for reg, value in readable.items():
                    with m.Case(reg >> 2):
                        m.d.sync += bus.rdata.eq(value)
        return m
