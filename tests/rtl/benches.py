"""Designs the cocotb benches are built from: the DMA engine with its buffers, and the processor.

:class:`DmaBench` puts :class:`~dlproc.processor.dma.DmaEngine` (behind the read-channel arbiter, as in the
processor) next to the input, weight, parameter and output buffers. The test drives the command stream, the
window and the fc ports directly, reads buffers back through the ``peek`` port, and finds the output buffer
preloaded with :func:`output_pattern`.
"""

import numpy as np
from amaranth.hdl import Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from dlproc.processor.axi import AXI_ID_WIDTH, BURST_INCR, Axi4Signature
from dlproc.processor.buffers import OnChipBuffers, entries_from_bytes
from dlproc.processor.config import ProcessorConfig
from dlproc.processor.dma import AXI_CACHE, LOAD_ID, DmaEngine, ReadChannelArbiter
from dlproc.processor.isa import INSTRUCTION_BITS
from dlproc.processor.top import DLProcessor

__all__ = ["DmaBench", "output_pattern", "PEEK_BUFFERS", "preloaded_processor"]

#: Buffers readable through the DMA bench's ``peek`` port, by ``peek_buf`` value.
PEEK_BUFFERS = ("input", "weight", "param")


def output_pattern(config: ProcessorConfig) -> np.ndarray:
    """Preloaded output buffer contents: int8 ``(acc_buffer_entries, conv_oc_lanes)``, distinct bytes."""
    rng = np.random.default_rng(1234)
    return rng.integers(-128, 128, (config.acc_buffer_entries, config.conv_oc_lanes), dtype=np.int8)


def _output_init(config: ProcessorConfig) -> list[int]:
    return entries_from_bytes(output_pattern(config).view(np.uint8), config.output_entry_bytes)


def _connect_master(m: Module, axi, arb: ReadChannelArbiter, dma: DmaEngine, config: ProcessorConfig) -> None:
    for name in ("arid", "araddr", "arlen", "arsize", "arburst", "arcache", "arprot", "arvalid", "rready"):
        m.d.comb += getattr(axi, name).eq(getattr(arb.axi, name))
    for name in ("arready", "rid", "rdata", "rresp", "rlast", "rvalid"):
        m.d.comb += getattr(arb.axi, name).eq(getattr(axi, name))
    m.d.comb += [
        axi.awid.eq(LOAD_ID), axi.awaddr.eq(dma.aw.payload.addr), axi.awlen.eq(dma.aw.payload.len),
        axi.awsize.eq(config.beat_bytes.bit_length() - 1), axi.awburst.eq(BURST_INCR), axi.awcache.eq(AXI_CACHE),
        axi.awvalid.eq(dma.aw.valid), dma.aw.ready.eq(axi.awready),
        axi.wdata.eq(dma.w.payload.data), axi.wstrb.eq(-1), axi.wlast.eq(dma.w.payload.last),
        axi.wvalid.eq(dma.w.valid), dma.w.ready.eq(axi.wready),
        dma.b.valid.eq(axi.bvalid), dma.b.payload.eq(axi.bresp), axi.bready.eq(dma.b.ready),
    ]


class DmaBench(wiring.Component):
    """The DMA engine, the read-channel arbiter and four buffers, with test access ports.

    Parameters
    ----------
    config : ProcessorConfig
        The processor configuration.
    """

    def __init__(self, config: ProcessorConfig):
        self._config = config
        peek_width = max(config.input_entry_bytes, config.weight_entry_bytes, config.param_entry_bytes) * 8
        super().__init__({
            "m_axi": Out(Axi4Signature(addr_width=config.axi_addr_width, data_width=config.axi_data_width,
                                       id_width=AXI_ID_WIDTH)),
            "cmd": In(stream.Signature(INSTRUCTION_BITS)),
            "busy": Out(1), "error": Out(1), "error_code": Out(4), "fc_abort": Out(1),
            "ddr_base": In(64), "ddr_size": In(33),
            "fc_cmd": Out(stream.Signature(INSTRUCTION_BITS)),
            "fc_weights": Out(stream.Signature(config.axi_data_width)),
            "peek_buf": In(2), "peek_addr": In(16), "peek_data": Out(peek_width),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        m.submodules.dma = dma = DmaEngine(config=cfg)
        m.submodules.arb = arb = ReadChannelArbiter(config=cfg)
        wiring.connect(m, dma.ar, arb.dma_ar)
        wiring.connect(m, arb.dma_r, dma.r)
        m.d.comb += [arb.fetch_ar.valid.eq(0), arb.fetch_r.ready.eq(1)]
        _connect_master(m, self.m_axi, arb, dma, cfg)

        wiring.connect(m, wiring.flipped(self.cmd), dma.cmd)
        wiring.connect(m, dma.fc_cmd, wiring.flipped(self.fc_cmd))
        wiring.connect(m, dma.fc_weights, wiring.flipped(self.fc_weights))
        m.d.comb += [self.busy.eq(dma.busy), self.error.eq(dma.error), self.error_code.eq(dma.error_code),
                     self.fc_abort.eq(dma.fc_abort), dma.ddr_base.eq(self.ddr_base), dma.ddr_size.eq(self.ddr_size)]

        bufs = OnChipBuffers(cfg, init={"output": _output_init(cfg)})
        for name, mem in bufs.memories().items():
            m.submodules[name] = mem
        geo = bufs.geometry
        wiring.connect(m, dma.inp_wr, bufs.input.write_port(granularity=geo["input"].write_granularity))
        wiring.connect(m, dma.wgt_wr, bufs.weight.write_port(granularity=geo["weight"].write_granularity))
        wiring.connect(m, dma.par_wr, bufs.param.write_port(granularity=geo["param"].write_granularity))
        wiring.connect(m, dma.out_rd, bufs.output.read_port())
        peeks = []
        for name in PEEK_BUFFERS:
            port = getattr(bufs, name).read_port()
            m.d.comb += port.addr.eq(self.peek_addr)
            peeks.append(port.data)
        m.d.comb += self.peek_data.eq(Mux(self.peek_buf == 0, peeks[0], Mux(self.peek_buf == 1, peeks[1], peeks[2])))
        return m


def preloaded_processor(config: ProcessorConfig) -> DLProcessor:
    """The processor with its output buffer preloaded with :func:`output_pattern` (so STORE has data at once)."""
    return DLProcessor(config=config, buffer_init={"output": _output_init(config)})
