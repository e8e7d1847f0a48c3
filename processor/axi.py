"""AXI4 and AXI4-Lite interface signatures of the processor's top level.

Amaranth's Verilog back end flattens an interface member ``m_axi`` into ports ``m_axi__awaddr`` etc., which is
what the Verilator harness, the cocotb bus models (prefix ``m_axi``, separator ``__``) and the Vivado block design
bind to. Directions are from the point of view of the master (the processor for ``m_axi``, the PS for ``s_axil``).
"""

from __future__ import annotations

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AxiLiteSignature", "Axi4Signature", "AXI_ID_WIDTH", "AXIL_ADDR_WIDTH", "RESP_OKAY", "RESP_SLVERR",
           "RESP_DECERR", "BURST_INCR", "AXI_PAGE_BYTES", "MAX_BURST_BEATS"]

#: Width of the AXI ID signals of the processor's master (ID 0: instruction fetch, 1: DMA, 2: fc weights).
AXI_ID_WIDTH = 4
#: Address width of the control register slave (4 KiB register page).
AXIL_ADDR_WIDTH = 12

#: An AXI4 burst must not cross a boundary of this many bytes.
AXI_PAGE_BYTES = 4096
#: Longest INCR burst of AXI4, in beats.
MAX_BURST_BEATS = 256

RESP_OKAY, RESP_EXOKAY, RESP_SLVERR, RESP_DECERR = 0, 1, 2, 3
BURST_INCR = 1


class AxiLiteSignature(wiring.Signature):
    """AXI4-Lite with 32-bit data, as seen by the master.

    Parameters
    ----------
    addr_width : int
        Width of ``awaddr`` / ``araddr``.
    """

    def __init__(self, *, addr_width: int = AXIL_ADDR_WIDTH):
        if not isinstance(addr_width, int) or addr_width < 2:
            raise TypeError(f"Address width must be an integer >= 2, not {addr_width!r}")
        self.addr_width = addr_width
        super().__init__({
            "awaddr": Out(addr_width), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arvalid": Out(1), "arready": In(1),
            "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })


class Axi4Signature(wiring.Signature):
    """Full AXI4 (INCR bursts, IDs) as seen by the master.

    Parameters
    ----------
    addr_width : int
        Width of ``awaddr`` / ``araddr``.
    data_width : int
        Width of ``wdata`` / ``rdata`` (32 to 512, power of two).
    id_width : int
        Width of the ID signals.
    """

    def __init__(self, *, addr_width: int, data_width: int, id_width: int = AXI_ID_WIDTH):
        if not isinstance(addr_width, int) or not 12 <= addr_width <= 64:
            raise TypeError(f"Address width must be an integer from 12 to 64, not {addr_width!r}")
        if data_width not in (32, 64, 128, 256, 512):
            raise TypeError(f"Data width must be 32, 64, 128, 256 or 512, not {data_width!r}")
        if not isinstance(id_width, int) or not 1 <= id_width <= 16:
            raise TypeError(f"ID width must be an integer from 1 to 16, not {id_width!r}")
        self.addr_width, self.data_width, self.id_width = addr_width, data_width, id_width
        super().__init__({
            "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3),
            "awburst": Out(2), "awcache": Out(4), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1), "wvalid": Out(1),
            "wready": In(1),
            "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3),
            "arburst": Out(2), "arcache": Out(4), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1), "rvalid": In(1),
            "rready": Out(1),
        })
