"""The processor's top level: register file, instruction fetch, dispatcher, DMA and compute engines, buffers.

Module hierarchy of :class:`DLProcessor`::

    DLProcessor
    ├── csr       ControlRegisters      AXI4-Lite registers, performance counters, event log
    ├── fetch     FetchUnit             program prefetch FIFO (ARID 0)
    │   └── checker InstructionChecker  legality of each word on its way into the FIFO (pipelined)
    ├── dispatch  Dispatcher            in-order issue, SYNC/MARK/END, error and stop handling
    ├── rd_arb    ReadChannelArbiter    AR arbitration fetch/DMA, R routing by RID
    ├── dma       DmaEngine             LOAD / STORE / FC weight streaming (ARID/AWID 1, ARID 2)
    ├── engine    ComputeEngine         GEMM / POST
    ├── fc        FcUnit                fc layers (reset after an FC aborted by a bus error)
    └── input, weight, param, acc, output   the on-chip buffer memories

Issue rules of the dispatcher: instructions leave in program order, one every two cycles at best. LOAD and STORE
wait for the DMA engine to be free; FC waits for the DMA engine, the compute engine and the fc unit (the fc unit
shares the input-buffer read port and the accumulator ports with the compute engine); GEMM and POST wait for the
compute engine and for no FC to be running. SYNC waits until everything is idle; MARK records ``(layer, CYCLES)``
in the event log; END waits until everything is idle and sets DONE. An illegal word, a fetch fault or reaching
``INSTR_COUNT`` stops the issue; the processor then waits until the engines are idle and sets ERROR. A DMA
error always belongs to an older instruction than the one being dispatched, so it takes precedence and its
instruction index becomes ``ERROR_PC`` (and events of MARKs dispatched after it are dropped from the log, so the
log matches the golden model's).

Timing model (cycles of the processor clock, ``B`` = bytes per AXI beat, ``L`` = DDR read latency from AR
handshake to first R beat; measured in ``tests/rtl/bench_top.py::dma_throughput`` with ``L`` of about 3):

* Dispatch: an instruction leaves the fetch FIFO in one cycle (with the verdict of the fetch unit's pipelined
  legality checker, :data:`~.checker.CHECK_LATENCY` cycles after its last R beat) and is issued in the next, so at
  best one instruction every :data:`DISPATCH_CYCLES` = 2 cycles. Fetch reads bursts of 4 instructions
  (``4 * 32 / B`` beats) whenever the 8-entry FIFO has room for them; at ``32 / B`` cycles per instruction it
  keeps up with the dispatcher for ``B >= 16`` and limits runs of short instructions on narrower buses. An
  empty program ``[END]`` took 16 cycles from START to DONE on the 32-bit bench with the combinational checker;
  the pipelined checker adds :data:`~.checker.CHECK_LATENCY` to the first instruction (and to the first of every
  refill after the FIFO ran dry).
* LOAD / STORE of ``n`` chunks of ``c`` bytes: one beat per cycle once streaming, bursts of up to 256 beats with
  up to 4 outstanding per direction, so about ``n * c / B + L + 7`` cycles when chunks are long; each chunk
  costs a window check and each burst 2 planner cycles, so chunks shorter than 3 beats run at one chunk per 3
  cycles. Measured on the 32-bit bench: LOAD of 1/16/256/1024 beats = 10/25/265/1033 cycles more than
  ``[END]``, STORE 11/26/266/1034 (a STORE ends with its last B response).
* FC: window check of the last row (2 cycles) and the fc unit's command, then the rows stream as above; the fc
  unit takes ``fc_threads`` weights per cycle and back-pressures R when that is slower than the bus.
"""

from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI_ID_WIDTH, BURST_INCR, Axi4Signature, AxiLiteSignature
from .buffers import OnChipBuffers
from .checker import ERROR_CODE_SHAPE
from .config import ProcessorConfig
from .csr import EVENT_LAYER_BITS, ControlRegisters
from .dma import AXI_CACHE, LOAD_ID, DmaEngine, ReadChannelArbiter
from .engine import ComputeEngine
from .fc import FcUnit
from .fetch import FetchedLayout, FetchUnit
from .isa import INSTRUCTION_BITS, OPCODE_BITS, Engine, ErrorCode, InstructionSet, Opcode, opcode_of, opcodes_of

__all__ = ["DLProcessor", "Dispatcher", "DISPATCH_CYCLES"]

#: Cycles between two dispatched instructions at best (FETCH: take the FIFO entry; ISSUE: hand it to its engine).
DISPATCH_CYCLES = 2


class Dispatcher(wiring.Component):
    """In-order issue of the instruction stream to the DMA and compute engines.

    Parameters
    ----------
    config : ProcessorConfig
        The processor configuration.

    Members
    -------
    start, clear : In(1)
        Pulses from the register file (START is only given while not busy).
    instr_count : In(32)
        Number of instructions of the program.
    busy, done, error : Out(1)
        The STATUS bits.
    error_code : Out(4)
        The ERROR_CODE register.
    error_pc, pc : Out(32)
        Index of the failing instruction; index of the instruction being dispatched.
    instr : In(stream.Signature(FetchedLayout()))
        Fetched instructions.
    fetch_active : Out(1)
        The fetch unit may go on requesting.
    dma_cmd, eng_cmd : Out(stream.Signature(256))
        Instructions for the DMA engine (LOAD, STORE, FC) and the compute engine (GEMM, POST).
    dma_busy, dma_fc_active, dma_error : In(1)
        DMA engine state; ``dma_error`` is a pulse with ``dma_error_code``.
    dma_error_code : In(4)
    eng_busy, fc_busy : In(1)
        Compute engine and fc unit state.
    event_valid : Out(1)
        A MARK is dispatched, with ``event_layer``.
    event_layer : Out(16)
    event_truncate : Out(1)
        Pulse when a DMA instruction failed: only the first ``event_keep`` events (the MARKs older than the
        failed instruction) stay in the log, as in the golden model.
    event_keep : Out(32)
    """

    def __init__(self, *, config: ProcessorConfig):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
        self._config = config
        self._isa = InstructionSet(config)
        super().__init__({
            "start": In(1), "clear": In(1), "instr_count": In(32),
            "busy": Out(1), "done": Out(1), "error": Out(1), "error_code": Out(ERROR_CODE_SHAPE),
            "error_pc": Out(32), "pc": Out(32),
            "instr": In(stream.Signature(FetchedLayout())), "fetch_active": Out(1),
            "dma_cmd": Out(stream.Signature(INSTRUCTION_BITS)), "eng_cmd": Out(stream.Signature(INSTRUCTION_BITS)),
            "dma_busy": In(1), "dma_fc_active": In(1), "dma_error": In(1), "dma_error_code": In(ERROR_CODE_SHAPE),
            "eng_busy": In(1), "fc_busy": In(1),
            "event_valid": Out(1), "event_layer": Out(EVENT_LAYER_BITS),
            "event_truncate": Out(1), "event_keep": Out(32),
        })

    def elaborate(self, platform):
        m = Module()

        ir = Signal(INSTRUCTION_BITS)
        ir_fault = Signal(ERROR_CODE_SHAPE)   # fetch fault or the checker's verdict, NONE when executable
        opcode = Signal(OPCODE_BITS)
        m.d.comb += [opcode.eq(opcode_of(ir)),
                     self.dma_cmd.payload.eq(ir), self.eng_cmd.payload.eq(ir),
                     self.event_layer.eq(data.View(self._isa.layout(Opcode.MARK), ir).layer)]

        # A command handshake is not yet visible in the engine's busy output: remember it for one cycle.
        just_issued = Signal()
        all_idle = Signal()
        m.d.comb += all_idle.eq(~self.dma_busy & ~self.eng_busy & ~self.fc_busy & ~just_issued)
        m.d.sync += just_issued.eq((self.dma_cmd.valid & self.dma_cmd.ready)
                                   | (self.eng_cmd.valid & self.eng_cmd.ready))

        dma_failed = Signal()
        dma_fail_code = Signal(ERROR_CODE_SHAPE)
        dma_pc = Signal(32)
        marks = Signal(32)            # MARKs dispatched in this run
        marks_before_dma = Signal(32)  # ... before the DMA engine's current instruction
        m.d.comb += self.event_keep.eq(marks_before_dma)
        with m.If(self.event_valid):
            m.d.sync += marks.eq(marks + 1)
        with m.If(self.dma_error & ~dma_failed):
            m.d.sync += [dma_failed.eq(1), dma_fail_code.eq(self.dma_error_code)]

        stop_code = Signal(ERROR_CODE_SHAPE)

        with m.If(self.clear):
            m.d.sync += [self.done.eq(0), self.error.eq(0)]

        def stop(code):
            m.d.sync += stop_code.eq(code)
            m.next = "STOPPING"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [self.busy.eq(1), self.done.eq(0), self.error.eq(0), self.error_code.eq(0),
                                 self.error_pc.eq(0), self.pc.eq(0), dma_failed.eq(0), marks.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += self.fetch_active.eq(1)
                with m.If(dma_failed):
                    stop(ErrorCode.NONE)
                with m.Elif(self.pc == self.instr_count):
                    stop(ErrorCode.PROGRAM_END)
                with m.Elif(self.instr.valid):
                    m.d.comb += self.instr.ready.eq(1)
                    m.d.sync += [ir.eq(self.instr.payload.word), ir_fault.eq(self.instr.payload.fault)]
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += self.fetch_active.eq(1)
                advance = Signal()
                with m.If(dma_failed):
                    stop(ErrorCode.NONE)
                with m.Elif(ir_fault != ErrorCode.NONE):
                    stop(ir_fault)
                with m.Else():
                    # the engine of each opcode is Opcode.engine; FC is the DMA-engine opcode that also needs the
                    # compute engine's ports (the fc unit shares them)
                    dma_only = [op for op in opcodes_of(Engine.DMA) if op != Opcode.FC]
                    with m.Switch(opcode):
                        with m.Case(*dma_only):
                            m.d.comb += self.dma_cmd.valid.eq(1)
                            m.d.comb += advance.eq(self.dma_cmd.ready)
                        with m.Case(Opcode.FC):
                            m.d.comb += self.dma_cmd.valid.eq(~self.eng_busy & ~self.fc_busy & ~just_issued)
                            m.d.comb += advance.eq(self.dma_cmd.valid & self.dma_cmd.ready)
                        with m.Case(*opcodes_of(Engine.COMPUTE)):
                            m.d.comb += self.eng_cmd.valid.eq(~self.fc_busy & ~self.dma_fc_active)
                            m.d.comb += advance.eq(self.eng_cmd.valid & self.eng_cmd.ready)
                        with m.Case(Opcode.SYNC):
                            m.d.comb += advance.eq(all_idle)
                        with m.Case(Opcode.MARK):
                            m.d.comb += [self.event_valid.eq(1), advance.eq(1)]
                        with m.Case(Opcode.END):
                            with m.If(all_idle):
                                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                                m.next = "IDLE"
                    with m.If(self.dma_cmd.valid & self.dma_cmd.ready):
                        m.d.sync += [dma_pc.eq(self.pc), marks_before_dma.eq(marks)]
                    with m.If(advance):
                        m.d.sync += self.pc.eq(self.pc + 1)
                        m.next = "FETCH"
            with m.State("STOPPING"):
                # Let the engines finish what they were given; a DMA error (older instruction) wins.
                with m.If(all_idle):
                    m.d.sync += [self.busy.eq(0), self.error.eq(1)]
                    with m.If(dma_failed):
                        m.d.comb += self.event_truncate.eq(1)
                        m.d.sync += [self.error_code.eq(dma_fail_code), self.error_pc.eq(dma_pc),
                                     self.pc.eq(dma_pc)]
                    with m.Else():
                        m.d.sync += [self.error_code.eq(stop_code), self.error_pc.eq(self.pc)]
                    m.next = "IDLE"
        return m


class DLProcessor(wiring.Component):
    """The deep learning processor: an AXI4-Lite register slave, an AXI4 master to DDR and an interrupt.

    Parameters
    ----------
    config : ProcessorConfig
        The processor configuration.
    buffer_init : dict of str to list of int, optional
        Initial rows of the buffers by name (simulation only; hardware buffers start at zero).

    Members
    -------
    s_axil : In(AxiLiteSignature())
        Control and status registers (:class:`~.isa.Reg`).
    m_axi : Out(Axi4Signature(addr_width=config.axi_addr_width, data_width=config.axi_data_width))
        DDR master.
    irq : Out(1)
        ``IRQ_EN & (DONE | ERROR)``.
    """

    def __init__(self, *, config: ProcessorConfig, buffer_init: dict | None = None):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
        self._config = config
        self._buffer_init = dict(buffer_init or {})
        super().__init__({
            "s_axil": In(AxiLiteSignature()),
            "m_axi": Out(Axi4Signature(addr_width=config.axi_addr_width, data_width=config.axi_data_width,
                                       id_width=AXI_ID_WIDTH)),
            "irq": Out(1),
        })

    @property
    def config(self) -> ProcessorConfig:
        """The processor configuration."""
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        axi = self.m_axi

        m.submodules.csr = csr = ControlRegisters(config=cfg)
        m.submodules.fetch = fetch = FetchUnit(config=cfg)
        m.submodules.dispatch = dispatch = Dispatcher(config=cfg)
        m.submodules.rd_arb = rd_arb = ReadChannelArbiter(config=cfg)
        m.submodules.dma = dma = DmaEngine(config=cfg)
        m.submodules.engine = engine = ComputeEngine(config=cfg)
        fc_reset = Signal()
        fc = FcUnit(config=cfg)
        m.submodules.fc = ResetInserter(fc_reset)(fc)

        wiring.connect(m, wiring.flipped(self.s_axil), csr.s_axil)

        # DDR_SIZE = 0 stands for 4 GiB (the register is 32 bits wide).
        ddr_size = Signal(33)
        m.d.comb += ddr_size.eq(csr.ddr_size)
        with m.If(csr.ddr_size == 0):
            m.d.comb += ddr_size.eq(1 << 32)

        # ------------------------------------------------------------------ control
        m.d.comb += [
            dispatch.start.eq(csr.start), dispatch.clear.eq(csr.clear), dispatch.instr_count.eq(csr.instr_count),
            csr.busy.eq(dispatch.busy), csr.done.eq(dispatch.done), csr.error.eq(dispatch.error),
            csr.error_code.eq(dispatch.error_code), csr.error_pc.eq(dispatch.error_pc), csr.pc.eq(dispatch.pc),
            csr.event_valid.eq(dispatch.event_valid), csr.event_layer.eq(dispatch.event_layer),
            csr.event_truncate.eq(dispatch.event_truncate), csr.event_keep.eq(dispatch.event_keep),
            csr.mac_active.eq(engine.mac_active),
            csr.rd_beat.eq(axi.rvalid & axi.rready), csr.wr_beat.eq(axi.wvalid & axi.wready),
            self.irq.eq(csr.irq_en & (dispatch.done | dispatch.error)),

            fetch.start.eq(csr.start), fetch.active.eq(dispatch.fetch_active),
            fetch.instr_addr.eq(csr.instr_addr), fetch.instr_count.eq(csr.instr_count),
            fetch.ddr_base.eq(csr.ddr_base), fetch.ddr_size.eq(ddr_size),
            dma.ddr_base.eq(csr.ddr_base), dma.ddr_size.eq(ddr_size),

            dispatch.dma_busy.eq(dma.busy), dispatch.dma_fc_active.eq(dma.fc_active),
            dispatch.dma_error.eq(dma.error), dispatch.dma_error_code.eq(dma.error_code),
            dispatch.eng_busy.eq(engine.busy), dispatch.fc_busy.eq(fc.busy),
            fc_reset.eq(dma.fc_abort),
        ]
        wiring.connect(m, fetch.instr, dispatch.instr)
        wiring.connect(m, dispatch.dma_cmd, dma.cmd)
        wiring.connect(m, dispatch.eng_cmd, engine.cmd)
        wiring.connect(m, dma.fc_cmd, fc.cmd)
        wiring.connect(m, dma.fc_weights, fc.weights)

        # ------------------------------------------------------------------ AXI4 master
        wiring.connect(m, fetch.ar, rd_arb.fetch_ar)
        wiring.connect(m, dma.ar, rd_arb.dma_ar)
        wiring.connect(m, rd_arb.fetch_r, fetch.r)
        wiring.connect(m, rd_arb.dma_r, dma.r)
        for name in ("arid", "araddr", "arlen", "arsize", "arburst", "arcache", "arprot", "arvalid", "rready"):
            m.d.comb += getattr(axi, name).eq(getattr(rd_arb.axi, name))
        for name in ("arready", "rid", "rdata", "rresp", "rlast", "rvalid"):
            m.d.comb += getattr(rd_arb.axi, name).eq(getattr(axi, name))
        m.d.comb += [
            axi.awid.eq(LOAD_ID), axi.awaddr.eq(dma.aw.payload.addr), axi.awlen.eq(dma.aw.payload.len),
            axi.awsize.eq(cfg.beat_bytes.bit_length() - 1), axi.awburst.eq(BURST_INCR), axi.awcache.eq(AXI_CACHE),
            axi.awprot.eq(0), axi.awvalid.eq(dma.aw.valid), dma.aw.ready.eq(axi.awready),
            axi.wdata.eq(dma.w.payload.data), axi.wstrb.eq(-1), axi.wlast.eq(dma.w.payload.last),
            axi.wvalid.eq(dma.w.valid), dma.w.ready.eq(axi.wready),
            dma.b.valid.eq(axi.bvalid), dma.b.payload.eq(axi.bresp), axi.bready.eq(dma.b.ready),
        ]

        # ------------------------------------------------------------------ buffers
        bufs = OnChipBuffers(cfg, init=self._buffer_init)
        for name, mem in bufs.memories().items():
            m.submodules[name] = mem
        geo = bufs.geometry

        wiring.connect(m, dma.inp_wr, bufs.input.write_port(granularity=geo["input"].write_granularity))
        wiring.connect(m, dma.wgt_wr, bufs.weight.write_port(granularity=geo["weight"].write_granularity))
        wiring.connect(m, dma.par_wr, bufs.param.write_port(granularity=geo["param"].write_granularity))
        wiring.connect(m, dma.out_rd, bufs.output.read_port())
        wiring.connect(m, engine.wgt_rd, bufs.weight.read_port())
        wiring.connect(m, engine.par_rd, bufs.param.read_port())
        wiring.connect(m, engine.out_wr, bufs.output.write_port())

        # The fc unit and the compute engine never run together (the dispatcher sees to it): share the ports.
        fc_owns = Signal()
        m.d.comb += fc_owns.eq(fc.busy | dma.fc_active)
        inp_rd = bufs.input.read_port()
        acc_rd = bufs.acc.read_port()
        acc_wr = bufs.acc.write_port(granularity=geo["acc"].write_granularity)
        for port, users, outputs in ((inp_rd, (engine.inp_rd, fc.inp_rd), ("addr", "en")),
                                     (acc_rd, (engine.acc_rd, fc.acc_rd), ("addr", "en")),
                                     (acc_wr, (engine.acc_wr, fc.acc_wr), ("addr", "en", "data"))):
            eng_side, fc_side = users
            for name in outputs:
                with m.If(fc_owns):
                    m.d.comb += getattr(port, name).eq(getattr(fc_side, name))
                with m.Else():
                    m.d.comb += getattr(port, name).eq(getattr(eng_side, name))
            if hasattr(port, "data") and "data" not in outputs:
                m.d.comb += [eng_side.data.eq(port.data), fc_side.data.eq(port.data)]
        return m
