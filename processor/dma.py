"""The DMA engine (LOAD, STORE, FC weight streaming) and the sharing of the AXI4 read channels.

:class:`DmaEngine` executes one LOAD, STORE or FC instruction at a time. All three walk the same loop nest of
*chunks* (contiguous byte ranges in DDR): chunk ``(i2, i1)`` starts at ``ddr_addr + i2 * ddr_stride2 + i1 *
ddr_stride1``. A planner checks each chunk against the window ``[0, DDR_SIZE)`` *before* issuing any of it, then
splits it into INCR bursts of at most 256 beats that never cross a 4 KiB boundary:

* LOAD reads (ARID 1) and writes the beats, in order, into the chosen buffer's write port (one beat per enable
  bit); byte position ``p`` of the transfer lands in entry ``buf_addr + p // entry_bytes``.
* STORE writes (AWID 1): an output-buffer reader streams the chunk's beats (output entries ``buf_addr + i1 *
  buf_stride1 + [0, n0)``, sub-block ``sb0 + i2``) through a FIFO to W; ``wlast`` follows the burst lengths of the
  accepted AW requests.
* FC reads rows ``ddr_addr + o * row_stride`` (ARID 2) and forwards the beats to the fc unit's weight stream. The
  last row is checked against the window before the fc unit is started, so a refused FC changes nothing.

Several bursts are outstanding on each channel (:data:`MAX_OUTSTANDING`). A chunk outside the window raises
``DDR_WINDOW`` and is never issued; SLVERR/DECERR on R or B raises ``AXI_READ_ERROR`` / ``AXI_WRITE_ERROR``. After
an error no new burst is issued, the outstanding ones are completed (R beats taken, W beats of accepted AW requests
sent, B responses taken), and only then the error is reported and the engine is idle again: the bus is never left
with a half-done transaction.
"""

from amaranth.hdl import Const, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .axi import AXI_ID_WIDTH, AXI_PAGE_BYTES, BURST_INCR, MAX_BURST_BEATS, RESP_OKAY
from .buffers import buffer_geometry
from .checker import ERROR_CODE_SHAPE
from .config import ProcessorConfig
from .fetch import ReadBeatLayout, ReadRequestLayout
from .isa import INSTRUCTION_BITS, OPCODE_BITS, Buffer, ErrorCode, InstructionSet, Opcode, opcode_of

__all__ = ["DmaEngine", "ReadChannelArbiter", "WriteRequestLayout", "WriteBeatLayout", "FETCH_ID", "LOAD_ID", "FC_ID",
           "MAX_OUTSTANDING", "MAX_BURST_BEATS", "AXI_CACHE"]

#: AXI IDs of the three traffic classes (see :mod:`.axi`).
FETCH_ID, LOAD_ID, FC_ID = 0, 1, 2
#: Bursts outstanding per direction.
MAX_OUTSTANDING = 4
#: ARCACHE/AWCACHE: normal non-cacheable bufferable (what Zynq UltraScale+ HP ports expect from a DMA).
AXI_CACHE = 0b0011

def _log2(value: int) -> int:
    assert value > 0 and value & (value - 1) == 0, value
    return value.bit_length() - 1


class WriteRequestLayout(data.StructLayout):
    """An AXI write burst request: physical address and ``len`` (beats - 1).

    Parameters
    ----------
    addr_width : int
        Width of the physical address.
    """

    def __init__(self, addr_width: int):
        super().__init__({"addr": unsigned(addr_width), "len": unsigned(8)})


class WriteBeatLayout(data.StructLayout):
    """One AXI write data beat: data and last flag (strobes are all ones).

    Parameters
    ----------
    data_width : int
        Width of the AXI data bus.
    """

    def __init__(self, data_width: int):
        super().__init__({"data": unsigned(data_width), "last": unsigned(1)})


class ReadChannelArbiter(wiring.Component):
    """Shares AR and R of the AXI4 master between instruction fetch and the DMA engine.

    AR requests pass through a register (fetch has priority; a request is taken only when the register is free,
    so ``arvalid`` and the request never change while waiting for ``arready``). R beats are routed by RID:
    :data:`FETCH_ID` to ``fetch_r``, :data:`LOAD_ID` and :data:`FC_ID` to ``dma_r``; beats with any other ID are
    accepted and dropped.

    Parameters
    ----------
    config : ProcessorConfig
        Supplies the AXI widths.
    id_width : int
        Width of the AXI ID.

    Members
    -------
    fetch_ar, dma_ar : In(stream.Signature(ReadRequestLayout))
        Burst requests.
    fetch_r, dma_r : Out(stream.Signature(ReadBeatLayout))
        Routed read beats.
    axi : Out(...)
        The AR and R signals of the master (``arid``, ``araddr``, ... ``rready``), named as in
        :class:`~.axi.Axi4Signature`.
    """

    def __init__(self, *, config: ProcessorConfig, id_width: int = AXI_ID_WIDTH):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
        self._config = config
        req = stream.Signature(ReadRequestLayout(config.axi_addr_width, id_width))
        beat = stream.Signature(ReadBeatLayout(config.axi_data_width))
        aw, dw = config.axi_addr_width, config.axi_data_width
        super().__init__({
            "fetch_ar": In(req), "dma_ar": In(req), "fetch_r": Out(beat), "dma_r": Out(beat),
            "axi": Out(wiring.Signature({
                "arid": Out(id_width), "araddr": Out(aw), "arlen": Out(8), "arsize": Out(3), "arburst": Out(2),
                "arcache": Out(4), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
                "rid": In(id_width), "rdata": In(dw), "rresp": In(2), "rlast": In(1), "rvalid": In(1),
                "rready": Out(1),
            })),
        })

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        m.d.comb += [axi.arburst.eq(BURST_INCR), axi.arcache.eq(AXI_CACHE), axi.arprot.eq(0)]

        free = Signal()
        m.d.comb += free.eq(~axi.arvalid | axi.arready)
        with m.If(free):
            m.d.sync += axi.arvalid.eq(0)
            with m.If(self.fetch_ar.valid):
                m.d.comb += self.fetch_ar.ready.eq(1)
                m.d.sync += [axi.arvalid.eq(1), axi.araddr.eq(self.fetch_ar.payload.addr),
                             axi.arlen.eq(self.fetch_ar.payload.len), axi.arsize.eq(self.fetch_ar.payload.size),
                             axi.arid.eq(self.fetch_ar.payload.id)]
            with m.Elif(self.dma_ar.valid):
                m.d.comb += self.dma_ar.ready.eq(1)
                m.d.sync += [axi.arvalid.eq(1), axi.araddr.eq(self.dma_ar.payload.addr),
                             axi.arlen.eq(self.dma_ar.payload.len), axi.arsize.eq(self.dma_ar.payload.size),
                             axi.arid.eq(self.dma_ar.payload.id)]

        to_fetch = Signal()
        to_dma = Signal()
        m.d.comb += [to_fetch.eq(axi.rid == FETCH_ID), to_dma.eq((axi.rid == LOAD_ID) | (axi.rid == FC_ID))]
        for port, selected in ((self.fetch_r, to_fetch), (self.dma_r, to_dma)):
            m.d.comb += [port.valid.eq(axi.rvalid & selected), port.payload.data.eq(axi.rdata),
                         port.payload.resp.eq(axi.rresp), port.payload.last.eq(axi.rlast)]
        m.d.comb += axi.rready.eq(Mux(to_fetch, self.fetch_r.ready, Mux(to_dma, self.dma_r.ready, 1)))
        return m


class DmaEngine(wiring.Component):
    """Executes LOAD, STORE and FC instructions over the AXI4 master, one at a time.

    Parameters
    ----------
    config : ProcessorConfig
        The processor configuration (AXI widths, buffer geometries, lanes).
    id_width : int
        Width of the AXI ID.

    Members
    -------
    cmd : In(stream.Signature(256))
        The instruction word (LOAD, STORE or FC, already checked); accepted only while idle.
    busy : Out(1)
        An instruction is being executed (until its last response has been received).
    fc_active : Out(1)
        The instruction being executed is an FC.
    error : Out(1)
        One-cycle pulse at the end of a failed instruction, with ``error_code``.
    error_code : Out(4)
        :class:`~.isa.ErrorCode` of the failure.
    ddr_base : In(64)
        Physical base address of the DDR window.
    ddr_size : In(33)
        Size of the window in bytes.
    ar : Out(stream.Signature(ReadRequestLayout))
        Read bursts.
    r : In(stream.Signature(ReadBeatLayout))
        Read beats with :data:`LOAD_ID` or :data:`FC_ID`.
    aw : Out(stream.Signature(WriteRequestLayout))
        Write bursts (AWID :data:`LOAD_ID`).
    w : Out(stream.Signature(WriteBeatLayout))
        Write beats.
    b : In(stream.Signature(2))
        Write responses (BRESP).
    inp_wr, wgt_wr, par_wr : In(WritePort.Signature)
        Write ports of the input, weight and parameter buffers (one enable bit per AXI beat).
    out_rd : In(ReadPort.Signature)
        Synchronous read port of the output buffer.
    fc_cmd : Out(stream.Signature(256))
        The FC instruction word for the fc unit, sent once its weight rows are known to be inside the window.
    fc_weights : Out(stream.Signature(axi_data_width))
        The weight rows, beat by beat.
    fc_abort : Out(1)
        Pulse after an FC failed on the bus: the fc unit must be reset (it will not get the rest of its weights).
    """

    def __init__(self, *, config: ProcessorConfig, id_width: int = AXI_ID_WIDTH):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
        self._config = config
        self._isa = InstructionSet(config)
        geo = {name: buffer_geometry(config, name) for name in ("input", "weight", "param", "output")}
        self._geometry = geo
        super().__init__({
            "cmd": In(stream.Signature(INSTRUCTION_BITS)),
            "busy": Out(1), "fc_active": Out(1), "error": Out(1), "error_code": Out(ERROR_CODE_SHAPE),
            "ddr_base": In(64), "ddr_size": In(33),
            "ar": Out(stream.Signature(ReadRequestLayout(config.axi_addr_width, id_width))),
            "r": In(stream.Signature(ReadBeatLayout(config.axi_data_width))),
            "aw": Out(stream.Signature(WriteRequestLayout(config.axi_addr_width))),
            "w": Out(stream.Signature(WriteBeatLayout(config.axi_data_width))),
            "b": In(stream.Signature(2)),
            "inp_wr": In(geo["input"].write_port_signature()),
            "wgt_wr": In(geo["weight"].write_port_signature()),
            "par_wr": In(geo["param"].write_port_signature()),
            "out_rd": In(geo["output"].read_port_signature()),
            "fc_cmd": Out(stream.Signature(INSTRUCTION_BITS)),
            "fc_weights": Out(stream.Signature(config.axi_data_width)),
            "fc_abort": Out(1),
        })

    @property
    def config(self) -> ProcessorConfig:
        """The processor configuration."""
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg, isa = self._config, self._isa
        beat_log2 = _log2(cfg.beat_bytes)
        segment_bytes = cfg.conv_ic_lanes * cfg.element_bytes   # one channel block of one pixel
        segment_beats = segment_bytes // cfg.beat_bytes           # >= 1 (axi width <= ic lanes x element bits)

        # ------------------------------------------------------------------ the instruction being executed
        word = Signal(INSTRUCTION_BITS)
        load = data.View(isa.layout(Opcode.LOAD), word)
        store = data.View(isa.layout(Opcode.STORE), word)
        fc = data.View(isa.layout(Opcode.FC), word)
        # Per-instruction constants are decoded from the command once, when it is accepted, into registers:
        # no path of the chunk walker starts at the opcode bits of the held word.
        cmd_op = opcode_of(self.cmd.payload)
        cmd_load, cmd_store, cmd_fc = (data.View(isa.layout(op), self.cmd.payload)
                                       for op in (Opcode.LOAD, Opcode.STORE, Opcode.FC))
        latch = Signal()   # the command is accepted in this cycle
        opcode = Signal(OPCODE_BITS)
        is_store = Signal()
        is_fc = Signal()
        with m.If(latch):
            m.d.sync += [opcode.eq(cmd_op), is_store.eq(cmd_op == Opcode.STORE), is_fc.eq(cmd_op == Opcode.FC)]

        # Loop nest of chunks, the same for the three opcodes: (outer n2, stride2) x (inner n1, stride1) x chunk.
        nests = {Opcode.LOAD: ("n1", "ddr_stride1", "n2", "ddr_stride2"),
                 Opcode.STORE: ("n1", "ddr_stride1", "n2", "ddr_stride2"),
                 Opcode.FC: ("n_out", "row_stride", None, None)}

        def widest(position):
            return max(isa.shape(op, names[position]).width for op, names in nests.items() if names[position])

        # a chunk offset is ddr_addr + i2 * stride2 + i1 * stride1 (+ the chunk length at its end): the width of
        # that sum by Amaranth's own rules on LOAD's fields, the widest nest
        offset_bits = len(load.ddr_addr + load.n1 * load.ddr_stride1 + load.n2 * load.ddr_stride2 + load.len0)
        chunk_bytes = Signal(offset_bits)
        n1, n2 = Signal(widest(0)), Signal(widest(2))
        stride1, stride2 = Signal(widest(1)), Signal(widest(3))
        n1_last, n2_last = Signal(widest(0) + 1), Signal(widest(2) + 1)   # n - 1 (all ones for n == 0)
        ddr_addr = Signal(max(isa.shape(op, "ddr_addr").width for op in nests))
        with m.If(latch):
            m.d.sync += [chunk_bytes.eq(0), n1.eq(0), n2.eq(0), stride1.eq(0), stride2.eq(0), ddr_addr.eq(0)]
            with m.Switch(cmd_op):
                for op, view, chunk in ((Opcode.LOAD, cmd_load, cmd_load.len0),
                                        (Opcode.STORE, cmd_store, cmd_store.n0 << _log2(segment_bytes)),
                                        (Opcode.FC, cmd_fc, cmd_fc.n_in << _log2(segment_bytes))):
                    with m.Case(op):
                        c_n1, c_s1, c_n2, c_s2 = (getattr(view, name) if name else None for name in nests[op])
                        c_n2 = 1 if c_n2 is None else c_n2
                        m.d.sync += [chunk_bytes.eq(chunk), n1.eq(c_n1), n2.eq(c_n2), stride1.eq(c_s1),
                                     stride2.eq(0 if c_s2 is None else c_s2), ddr_addr.eq(view.ddr_addr),
                                     # n - 1 modulo 2 ** len(n_last): the compare of ``i != n - 1`` on the
                                     # widened n, also for n == 0 (which the checker rejects)
                                     n1_last.eq(c_n1 + (1 << len(n1_last)) - 1),
                                     n2_last.eq(c_n2 + (1 << len(n2_last)) - 1)]

        # ------------------------------------------------------------------ error state
        failed = Signal()
        fail_code = Signal(ERROR_CODE_SHAPE)
        fail_now = Signal()
        fail_now_code = Signal(ERROR_CODE_SHAPE)
        with m.If(fail_now & ~failed):
            m.d.sync += [failed.eq(1), fail_code.eq(fail_now_code)]

        # ------------------------------------------------------------------ planner state
        i1, i2 = Signal(len(n1)), Signal(len(n2))
        row_off = Signal(offset_bits)      # ddr_addr + i2 * stride2
        chunk_off = Signal(offset_bits)    # row_off + i1 * stride1
        cur_off = Signal(offset_bits)      # offset of the next burst
        chunk_left = Signal(offset_bits - beat_log2)  # beats of the chunk not yet requested
        fc_last_end = Signal(offset_bits + len(fc.n_out))

        rd_outstanding = Signal(range(MAX_OUTSTANDING + 1))
        wr_outstanding = Signal(range(MAX_OUTSTANDING + 1))
        req_addr = Signal(self._config.axi_addr_width)
        req_beats = Signal(range(MAX_BURST_BEATS + 1))
        m.d.comb += [self.ar.payload.addr.eq(req_addr), self.ar.payload.len.eq(req_beats - 1),
                     self.ar.payload.size.eq(beat_log2), self.ar.payload.id.eq(Mux(is_fc, FC_ID, LOAD_ID)),
                     self.aw.payload.addr.eq(req_addr), self.aw.payload.len.eq(req_beats - 1)]

        page_bits = _log2(AXI_PAGE_BYTES)
        phys_low = Signal(page_bits)
        to_4k = Signal(range(AXI_PAGE_BYTES // cfg.beat_bytes + 1))
        plan = Signal(range(MAX_BURST_BEATS + 1))
        m.d.comb += [phys_low.eq(self.ddr_base[:page_bits] + cur_off[:page_bits]),
                     to_4k.eq((AXI_PAGE_BYTES - phys_low) >> beat_log2)]
        limited = Const(MAX_BURST_BEATS, range(MAX_BURST_BEATS + 1))
        for bound in (chunk_left, to_4k):
            limited = Mux(bound < limited, bound, limited)
        m.d.comb += plan.eq(limited)

        outstanding_ok = Signal()
        m.d.comb += outstanding_ok.eq(Mux(is_store, wr_outstanding, rd_outstanding) < MAX_OUTSTANDING)
        ar_done = Signal()
        aw_done = Signal()
        m.d.comb += [ar_done.eq(self.ar.valid & self.ar.ready), aw_done.eq(self.aw.valid & self.aw.ready)]

        # STORE: beats granted to the output-buffer reader (chunks that passed the window check).
        grant = Signal()
        store_credit = Signal(offset_bits - beat_log2 + 1)
        chunk_beats = Signal.like(chunk_left)
        m.d.comb += chunk_beats.eq(chunk_bytes >> beat_log2)

        # ------------------------------------------------------------------ read data
        rd_last = Signal()
        m.d.comb += rd_last.eq(self.r.valid & self.r.ready & self.r.payload.last)
        m.d.sync += rd_outstanding.eq(rd_outstanding + ar_done - rd_last)
        with m.If(self.r.valid & self.r.ready & (self.r.payload.resp != RESP_OKAY)):
            m.d.comb += [fail_now.eq(1), fail_now_code.eq(ErrorCode.AXI_READ_ERROR)]

        # FC: forward to the fc unit (drop after a failure: the fc unit is reset at the end anyway).
        m.d.comb += [self.fc_weights.payload.eq(self.r.payload.data),
                     self.fc_weights.valid.eq(self.r.valid & is_fc & ~failed),
                     self.r.ready.eq(Mux(is_fc & ~failed, self.fc_weights.ready, 1))]

        # LOAD: write each beat into the next beat slot of the chosen buffer.
        max_lanes = max(self._geometry[n].width // cfg.axi_data_width for n in ("input", "weight", "param"))
        wr_entry = Signal(max(len(self.inp_wr.addr), len(self.wgt_wr.addr), len(self.par_wr.addr)))
        wr_lane = Signal(range(max_lanes))
        lanes_minus_one = Signal(range(max_lanes))
        with m.Switch(load.buffer):
            for buf, name in ((Buffer.INPUT, "input"), (Buffer.WEIGHT, "weight"), (Buffer.PARAM, "param")):
                with m.Case(buf):
                    m.d.comb += lanes_minus_one.eq(self._geometry[name].width // cfg.axi_data_width - 1)
        write_beat = Signal()
        # Beats of chunks issued before a refused chunk still land (as in the golden model); bad beats do not.
        m.d.comb += write_beat.eq(self.r.valid & (opcode == Opcode.LOAD) & (self.r.payload.resp == RESP_OKAY))
        for port, buf in ((self.inp_wr, Buffer.INPUT), (self.wgt_wr, Buffer.WEIGHT), (self.par_wr, Buffer.PARAM)):
            lanes = len(port.en)
            m.d.comb += [port.addr.eq(wr_entry), port.data.eq(self.r.payload.data.replicate(lanes)),
                         port.en.eq(Mux(write_beat & (load.buffer == buf), Const(1, lanes) << wr_lane, 0))]
        with m.If(self.r.valid & (opcode == Opcode.LOAD)):
            with m.If(wr_lane == lanes_minus_one):
                m.d.sync += [wr_lane.eq(0), wr_entry.eq(wr_entry + 1)]
            with m.Else():
                m.d.sync += wr_lane.eq(wr_lane + 1)

        # ------------------------------------------------------------------ STORE data: output buffer -> W
        flush = Signal()   # at the start of every instruction: forget the data of an earlier failed one
        data_depth = 8
        m.submodules.w_data = w_data = ResetInserter(flush)(
            SyncFIFOBuffered(width=cfg.axi_data_width, depth=data_depth))
        m.submodules.w_bursts = w_bursts = ResetInserter(flush)(SyncFIFOBuffered(width=8, depth=MAX_OUTSTANDING))

        sb = Signal(store.sb0.shape())                  # sub-block being read (sb0 + i2)
        rd_i1 = Signal(store.n1.shape())
        rd_row = Signal(len(self.out_rd.addr) + 1)      # buf_addr + i1 * buf_stride1
        rd_e = Signal(store.n0.shape())
        rd_k = Signal(range(segment_beats))
        pending = Signal()                              # a read issued last cycle
        pending_sel = Signal(range(cfg.output_entry_bytes // cfg.beat_bytes))
        issue_read = Signal()
        m.d.comb += [
            issue_read.eq((store_credit != 0) & (w_data.level + pending < data_depth)),
            self.out_rd.addr.eq(rd_row + rd_e),
            self.out_rd.en.eq(issue_read),
            w_data.w_en.eq(pending),
            w_data.w_data.eq(self.out_rd.data.word_select(pending_sel, cfg.axi_data_width)),
        ]
        m.d.sync += [pending.eq(issue_read), store_credit.eq(store_credit + Mux(grant, chunk_beats, 0) - issue_read)]
        with m.If(issue_read):
            m.d.sync += pending_sel.eq(sb * segment_beats + rd_k)
            with m.If(rd_k != segment_beats - 1):
                m.d.sync += rd_k.eq(rd_k + 1)
            with m.Else():
                m.d.sync += rd_k.eq(0)
                with m.If(rd_e != store.n0 - 1):
                    m.d.sync += rd_e.eq(rd_e + 1)
                with m.Else():
                    m.d.sync += rd_e.eq(0)
                    with m.If(rd_i1 != store.n1 - 1):
                        m.d.sync += [rd_i1.eq(rd_i1 + 1), rd_row.eq(rd_row + store.buf_stride1)]
                    with m.Else():
                        m.d.sync += [rd_i1.eq(0), rd_row.eq(store.buf_addr), sb.eq(sb + 1)]

        w_beat = Signal(8)
        m.d.comb += [
            w_bursts.w_en.eq(aw_done), w_bursts.w_data.eq(req_beats - 1),
            self.w.valid.eq(w_data.r_rdy & w_bursts.r_rdy),
            self.w.payload.data.eq(w_data.r_data),
            self.w.payload.last.eq(w_beat == w_bursts.r_data),
        ]
        with m.If(self.w.valid & self.w.ready):
            m.d.comb += w_data.r_en.eq(1)
            with m.If(self.w.payload.last):
                m.d.comb += w_bursts.r_en.eq(1)
                m.d.sync += w_beat.eq(0)
            with m.Else():
                m.d.sync += w_beat.eq(w_beat + 1)

        b_done = Signal()
        m.d.comb += [self.b.ready.eq(1), b_done.eq(self.b.valid)]
        m.d.sync += wr_outstanding.eq(wr_outstanding + aw_done - b_done)
        with m.If(self.b.valid & (self.b.payload != RESP_OKAY)):
            m.d.comb += [fail_now.eq(1), fail_now_code.eq(ErrorCode.AXI_WRITE_ERROR)]

        # ------------------------------------------------------------------ control
        in_window = Signal()
        m.d.comb += in_window.eq(chunk_off + chunk_bytes <= self.ddr_size)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.cmd.ready.eq(1), latch.eq(self.cmd.valid)]
                with m.If(self.cmd.valid):
                    m.d.sync += [word.eq(self.cmd.payload), failed.eq(0)]
                    m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += flush.eq(1)
                m.d.sync += [i1.eq(0), i2.eq(0), row_off.eq(ddr_addr), chunk_off.eq(ddr_addr),
                             wr_entry.eq(load.buf_addr), wr_lane.eq(0),
                             store_credit.eq(0), pending.eq(0), sb.eq(store.sb0), rd_i1.eq(0),
                             rd_row.eq(store.buf_addr), rd_e.eq(0), rd_k.eq(0), w_beat.eq(0),
                             fc_last_end.eq(fc.ddr_addr + (fc.n_out - 1) * fc.row_stride + chunk_bytes)]
                with m.If(is_fc):
                    m.next = "FC_CHECK"
                with m.Else():
                    m.next = "CHUNK"
            with m.State("FC_CHECK"):
                # Every weight row lies below the last one: checking it refuses the FC before anything happens.
                with m.If(fc_last_end > self.ddr_size):
                    m.d.comb += [fail_now.eq(1), fail_now_code.eq(ErrorCode.DDR_WINDOW)]
                    m.next = "REPORT"
                with m.Else():
                    m.next = "FC_START"
            with m.State("FC_START"):
                m.d.comb += [self.fc_cmd.valid.eq(1), self.fc_cmd.payload.eq(word)]
                with m.If(self.fc_cmd.ready):
                    m.next = "CHUNK"
            with m.State("CHUNK"):
                with m.If(failed):
                    m.next = "DRAIN"
                with m.Elif(~in_window):
                    m.d.comb += [fail_now.eq(1), fail_now_code.eq(ErrorCode.DDR_WINDOW)]
                    m.next = "DRAIN"
                with m.Else():
                    m.d.comb += grant.eq(is_store)
                    m.d.sync += [cur_off.eq(chunk_off), chunk_left.eq(chunk_beats)]
                    m.next = "PLAN"
            with m.State("PLAN"):
                with m.If(failed):
                    m.next = "DRAIN"
                with m.Elif(outstanding_ok):
                    m.d.sync += [req_addr.eq(self.ddr_base + cur_off), req_beats.eq(plan)]
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += [self.ar.valid.eq(~is_store), self.aw.valid.eq(is_store)]
                with m.If(Mux(is_store, self.aw.ready, self.ar.ready)):
                    m.d.sync += [cur_off.eq(cur_off + (req_beats << beat_log2)),
                                 chunk_left.eq(chunk_left - req_beats)]
                    with m.If(chunk_left != req_beats):
                        m.next = "PLAN"
                    with m.Elif(i1 != n1_last):
                        m.d.sync += [i1.eq(i1 + 1), chunk_off.eq(chunk_off + stride1)]
                        m.next = "CHUNK"
                    with m.Elif(i2 != n2_last):
                        m.d.sync += [i1.eq(0), i2.eq(i2 + 1), row_off.eq(row_off + stride2),
                                     chunk_off.eq(row_off + stride2)]
                        m.next = "CHUNK"
                    with m.Else():
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                # Complete every burst already issued before declaring the instruction finished.
                with m.If((rd_outstanding == 0) & (wr_outstanding == 0)):
                    m.next = "REPORT"
            with m.State("REPORT"):
                m.d.comb += [self.error.eq(failed), self.error_code.eq(fail_code),
                             self.fc_abort.eq(failed & is_fc)]
                m.next = "IDLE"

        m.d.comb += [self.busy.eq(~self.cmd.ready), self.fc_active.eq(~self.cmd.ready & is_fc)]
        return m
