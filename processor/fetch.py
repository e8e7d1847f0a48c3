"""Instruction fetch: reads the program from DDR in bursts into a small prefetch FIFO.

The fetch unit requests instructions ``INSTR_ADDR / 32 + [0, INSTR_COUNT)`` of the DDR window in INCR bursts of up
to :attr:`FetchUnit.burst_instructions` instructions (never crossing a 4 KiB boundary, never past
``INSTR_COUNT``), and only when the FIFO has room for the whole burst, so the R channel is never back-pressured by
instruction fetch. Each FIFO entry is one instruction word plus a fault code:

* an instruction whose 32 bytes are not inside the window ``[0, DDR_SIZE)`` is never read; the fetch unit queues
  a ``DDR_WINDOW`` entry in its place (after every earlier instruction) and stops. The dispatcher reports it only
  when that instruction is due, so ``ERROR_PC`` is the golden model's.
* an instruction read with SLVERR or DECERR on any of its beats is queued with ``AXI_READ_ERROR``.
* every other word passes the :class:`~.checker.InstructionChecker` pipeline on its way into the FIFO and is
  queued with its verdict (``ILLEGAL_OPCODE``, ``ILLEGAL_FIELD`` or ``NONE``), :data:`~.checker.CHECK_LATENCY`
  cycles after its last beat. Words inside that pipeline count as requested (``in_flight``), so the FIFO always
  has room for them.

A START flushes the FIFO; read data of bursts issued before it (a previous, stopped run) is drained and dropped
before the first new request, so a run never sees a stale word.

On a 512-bit bus (wider than an instruction) the fetch bursts are narrow: ARSIZE selects 32-byte beats, each in
the byte lanes of its own address, so one beat still carries exactly one instruction.
"""

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .axi import AXI_PAGE_BYTES, MAX_BURST_BEATS, RESP_OKAY
from .checker import ERROR_CODE_SHAPE, InstructionChecker
from .config import INSTRUCTION_BYTES, ProcessorConfig
from .isa import INSTRUCTION_BITS, ErrorCode

__all__ = ["FetchUnit", "FetchedLayout", "ReadRequestLayout", "ReadBeatLayout", "FETCH_DEPTH",
           "FETCH_BURST_INSTRUCTIONS"]

#: Depth of the prefetch FIFO in instructions (the processor's :class:`FetchUnit`).
FETCH_DEPTH = 8
#: Instructions per fetch burst; a burst is requested when the FIFO has room for all of it.
FETCH_BURST_INSTRUCTIONS = 4


class FetchedLayout(data.StructLayout):
    """A fetched instruction: the word and the fault that replaces it (``ErrorCode.NONE`` when fetched fine)."""

    def __init__(self):
        super().__init__({"word": unsigned(INSTRUCTION_BITS), "fault": ERROR_CODE_SHAPE})


class ReadRequestLayout(data.StructLayout):
    """An AXI read burst request: physical address, ``len`` (beats - 1), ``size`` (log2 bytes per beat), AXI ID.

    Parameters
    ----------
    addr_width : int
        Width of the physical address.
    id_width : int
        Width of the AXI ID.
    """

    def __init__(self, addr_width: int, id_width: int):
        super().__init__({"addr": unsigned(addr_width), "len": unsigned(8), "size": unsigned(3),
                          "id": unsigned(id_width)})


class ReadBeatLayout(data.StructLayout):
    """One AXI read data beat as routed to a reader: data, response and last flag.

    Parameters
    ----------
    data_width : int
        Width of the AXI data bus.
    """

    def __init__(self, data_width: int):
        super().__init__({"data": unsigned(data_width), "resp": unsigned(2), "last": unsigned(1)})


class FetchUnit(wiring.Component):
    """Prefetches the program into a FIFO of instruction words.

    Parameters
    ----------
    config : ProcessorConfig
        Supplies the AXI widths.
    depth : int
        FIFO depth in instructions (power of two, at least ``2 * burst_instructions`` for streaming).
    burst_instructions : int
        Instructions per read burst (at most 256 beats).
    fetch_id : int
        AXI ID of the fetch bursts.
    id_width : int
        Width of the AXI ID.

    Members
    -------
    start : In(1)
        Begin a run: flush the FIFO and fetch from ``instr_addr`` (low 5 bits ignored).
    active : In(1)
        High while the run goes on; when low no new burst is requested.
    instr_addr, instr_count : In(32)
        Program location (byte offset in the window) and length, sampled at ``start``.
    ddr_base : In(64)
        Physical base of the window, sampled at ``start``.
    ddr_size : In(33)
        Window size in bytes, sampled at ``start``.
    instr : Out(stream.Signature(FetchedLayout()))
        The instructions in program order.
    ar : Out(stream.Signature(ReadRequestLayout))
        Read burst requests.
    r : In(stream.Signature(ReadBeatLayout))
        The read data beats of this unit's ID (always accepted).
    """

    def __init__(self, *, config: ProcessorConfig, depth: int = FETCH_DEPTH,
                 burst_instructions: int = FETCH_BURST_INSTRUCTIONS, fetch_id: int = 0,
                 id_width: int = 4):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
        beats = max(1, INSTRUCTION_BITS // config.axi_data_width)
        if not isinstance(burst_instructions, int) or not 1 <= burst_instructions * beats <= MAX_BURST_BEATS:
            raise ValueError(f"burst_instructions must make a burst of 1 to {MAX_BURST_BEATS} beats, "
                             f"not {burst_instructions!r}")
        if not isinstance(depth, int) or depth < burst_instructions:
            raise ValueError(f"depth must be an integer >= burst_instructions ({burst_instructions}), not {depth!r}")
        self._config = config
        self._depth = depth
        self._burst = burst_instructions
        self._fetch_id = fetch_id
        super().__init__({
            "start": In(1), "active": In(1),
            "instr_addr": In(32), "instr_count": In(32), "ddr_base": In(64), "ddr_size": In(33),
            "instr": Out(stream.Signature(FetchedLayout())),
            "ar": Out(stream.Signature(ReadRequestLayout(config.axi_addr_width, id_width))),
            "r": In(stream.Signature(ReadBeatLayout(config.axi_data_width))),
        })

    @property
    def burst_instructions(self) -> int:
        """Instructions per read burst."""
        return self._burst

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        # A bus wider than an instruction is read with narrow (32-byte) beats: beat k of a burst carries the
        # instruction in the byte lanes of its address, which alternate between the halves of a 512-bit word.
        dw = min(cfg.axi_data_width, INSTRUCTION_BITS)
        beats_per_instr = INSTRUCTION_BITS // dw
        lanes = cfg.axi_data_width // dw
        lane = Signal(range(max(2, lanes)))     # which 256-bit lane the next beat uses (wide buses only)
        burst = self._burst

        m.submodules.fifo = fifo = ResetInserter(self.start)(
            SyncFIFOBuffered(width=len(self.instr.payload.as_value()), depth=self._depth))
        m.d.comb += [self.instr.valid.eq(fifo.r_rdy), self.instr.payload.eq(fifo.r_data),
                     fifo.r_en.eq(self.instr.ready)]

        in_flight = Signal(range(self._depth + 1))  # instructions requested and not yet in the FIFO

        # ------------------------------------------------------------------ burst planning
        # The run's state is kept as down-counters, set at START and stepped at each AR handshake, each with a
        # registered copy saturated at the burst size, so planning a burst is a minimum of three small values:
        # instructions left in the program, left in the window [0, DDR_SIZE), left before the next 4 KiB page.
        page_bits = AXI_PAGE_BYTES.bit_length() - 1
        instr_log2 = INSTRUCTION_BYTES.bit_length() - 1
        next_addr = Signal(64)                # physical address of the next instruction to request
        remaining = Signal(32)
        in_window = Signal(33 - instr_log2)
        sat_shape = range(burst + 1)
        rem_sat, win_sat, page_sat = Signal(sat_shape), Signal(sat_shape), Signal(sat_shape)

        def saturated(value):
            return Mux(value >= burst, burst, value[:len(Const(burst))])

        def to_page_end(addr):
            return (AXI_PAGE_BYTES - addr[:page_bits]) >> instr_log2

        def set_state(addr, left, window):
            return [next_addr.eq(addr), remaining.eq(left), in_window.eq(window),
                    rem_sat.eq(saturated(left)), win_sat.eq(saturated(window)),
                    page_sat.eq(saturated(to_page_end(addr)))]

        plan = Signal(range(burst + 1))
        space_ok = Signal()
        limited = rem_sat
        for bound in (win_sat, page_sat):
            limited = Mux(bound < limited, bound, limited)
        m.d.comb += [plan.eq(limited), space_ok.eq(fifo.level + in_flight + plan <= self._depth)]

        req_addr = Signal.like(self.ar.payload.addr)
        req_instrs = Signal(range(burst + 1))
        m.d.comb += [self.ar.payload.addr.eq(req_addr),
                     self.ar.payload.len.eq(req_instrs * beats_per_instr - 1),
                     self.ar.payload.size.eq((dw // 8).bit_length() - 1),
                     self.ar.payload.id.eq(self._fetch_id)]

        # ------------------------------------------------------------------ read data: assemble words
        assembly = Signal(INSTRUCTION_BITS)
        beat_index = Signal(range(beats_per_instr))
        beat_error = Signal()
        word_done = Signal()
        word = Signal(INSTRUCTION_BITS)
        word_error = Signal()
        push = Signal()      # whether assembled words go into the FIFO (only in the current run)
        m.d.comb += self.r.ready.eq(1)
        if lanes > 1:
            m.d.comb += word.eq(self.r.payload.data.word_select(lane, INSTRUCTION_BITS))
            with m.If(self.r.valid):
                m.d.sync += lane.eq(lane + 1)
        elif beats_per_instr == 1:
            m.d.comb += word.eq(self.r.payload.data)
        else:
            m.d.comb += word.eq(Cat(assembly[dw:], self.r.payload.data))
        m.d.comb += [word_error.eq(beat_error | (self.r.payload.resp != RESP_OKAY)),
                     word_done.eq(self.r.valid & (beat_index == beats_per_instr - 1))]
        with m.If(self.r.valid):
            m.d.sync += assembly.eq(word)
            with m.If(word_done):
                m.d.sync += [beat_index.eq(0), beat_error.eq(0)]
            with m.Else():
                m.d.sync += [beat_index.eq(beat_index + 1), beat_error.eq(word_error)]

        # Assembled words of the current run go through the checker's pipeline into the FIFO; words leaving it
        # while an earlier run is drained (a START came while they were inside) are dropped.
        m.submodules.checker = checker = InstructionChecker(config=cfg)
        draining = Signal()
        m.d.comb += [checker.valid.eq(word_done & push), checker.word.eq(word),
                     checker.fault.eq(Mux(word_error, ErrorCode.AXI_READ_ERROR, ErrorCode.NONE))]
        fault_push = Signal()
        m.d.comb += fifo.w_en.eq((checker.out_valid & ~draining) | fault_push)
        with m.If(fault_push):
            m.d.comb += fifo.w_data.eq(Cat(Const(0, INSTRUCTION_BITS), Const(ErrorCode.DDR_WINDOW, ERROR_CODE_SHAPE)))
        with m.Else():
            m.d.comb += fifo.w_data.eq(Cat(checker.out_word, checker.out_fault))

        issued = Signal()
        m.d.comb += issued.eq(self.ar.valid & self.ar.ready)
        # requested and not yet in the FIFO: a word leaves this count when it is dropped or leaves the checker
        m.d.sync += in_flight.eq(in_flight + Mux(issued, req_instrs, 0) - (word_done & ~push) - checker.out_valid)

        # ------------------------------------------------------------------ control
        def on_start():
            # START wins over every state (the FIFO is flushed by it as well).
            with m.If(self.start):
                off = self.instr_addr & ~(INSTRUCTION_BYTES - 1)
                m.d.sync += set_state(self.ddr_base + off, self.instr_count,
                                      Mux(self.ddr_size > off, (self.ddr_size - off) >> instr_log2, 0))
                m.next = "DRAIN"

        with m.FSM():
            with m.State("IDLE"):
                on_start()
            with m.State("DRAIN"):
                # Bursts of an earlier run may still be answered: drop their data first.
                m.d.comb += draining.eq(1)
                with m.If(in_flight == 0):
                    if lanes > 1:
                        m.d.sync += lane.eq(next_addr[5:5 + (lanes - 1).bit_length()])
                    m.next = "PLAN"
                on_start()
            with m.State("PLAN"):
                m.d.comb += push.eq(1)
                with m.If(~self.active):
                    m.next = "IDLE"
                with m.Elif(word_done & word_error):
                    m.next = "STOPPED"
                with m.Elif(rem_sat == 0):
                    pass
                with m.Elif(win_sat == 0):
                    # The next instruction lies outside the window: queue the fault after everything requested.
                    with m.If((in_flight == 0) & fifo.w_rdy):
                        m.d.comb += fault_push.eq(1)
                        m.next = "STOPPED"
                with m.Elif(space_ok):
                    m.d.sync += [req_addr.eq(next_addr), req_instrs.eq(plan)]
                    m.next = "ISSUE"
                on_start()
            with m.State("ISSUE"):
                # A request stays valid until accepted (AXI rule), even when the run has stopped meanwhile.
                m.d.comb += [push.eq(1), self.ar.valid.eq(1)]
                with m.If(self.ar.ready):
                    m.d.sync += set_state(next_addr + req_instrs * INSTRUCTION_BYTES, remaining - req_instrs,
                                          in_window - req_instrs)
                    m.next = "PLAN"
                with m.If(word_done & word_error):
                    m.next = "ISSUE_THEN_STOP"
                    with m.If(self.ar.ready):
                        m.next = "STOPPED"
            with m.State("ISSUE_THEN_STOP"):
                m.d.comb += self.ar.valid.eq(1)
                with m.If(self.ar.ready):
                    m.next = "STOPPED"
            with m.State("STOPPED"):
                with m.If(~self.active):
                    m.next = "IDLE"
                on_start()
        return m
