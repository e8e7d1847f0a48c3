"""What the cocotb benches of the DMA engine and of the processor share: the configuration, the DDR model's
geometry, the pause patterns of cocotbext-axi's own tests, LOAD/STORE builders, a poisoned RAM range, and one AXI
protocol monitor for the AR and AW channels.

The RAM is 4 MiB, aliased by address modulo its size; the DDR window is 1 MiB at physical 0x4010_0000 (RAM offset
1 MiB), so the rest of the RAM is a guard area that must never change.
"""

from __future__ import annotations

import itertools

from cocotb.triggers import FallingEdge

from dlproc.processor.axi import AXI_PAGE_BYTES, MAX_BURST_BEATS
from dlproc.processor.config import ProcessorConfig
from dlproc.processor.isa import Buffer, InstructionSet

__all__ = ["CONFIG", "ISA", "BEAT", "RAM_SIZE", "WINDOW", "PHYS_BASE", "RAM_WINDOW", "cycle_pause", "load", "store",
           "poison", "AxiProtocolMonitor"]

CONFIG = ProcessorConfig.preset("tiny_int8")
ISA = InstructionSet(CONFIG)
BEAT = CONFIG.beat_bytes

RAM_SIZE = 4 << 20
WINDOW = 1 << 20
PHYS_BASE = 0x4010_0000
RAM_WINDOW = PHYS_BASE % RAM_SIZE


def cycle_pause():
    """A fixed, irregular pause pattern (as in cocotbext-axi's own tests)."""
    return itertools.cycle([1, 1, 1, 0])


def load(buffer=Buffer.INPUT, buf_addr=0, ddr_addr=0, len0=BEAT, n1=1, s1=0, n2=1, s2=0) -> int:
    """A LOAD word."""
    return ISA.Load(buffer=buffer, buf_addr=buf_addr, ddr_addr=ddr_addr, len0=len0, n1=n1, ddr_stride1=s1, n2=n2,
                    ddr_stride2=s2).encode()


def store(buf_addr=0, ddr_addr=0, n0=1, n1=1, s1=0, buf_stride1=0, n2=1, s2=0, sb0=0) -> int:
    """A STORE word."""
    return ISA.Store(buf_addr=buf_addr, ddr_addr=ddr_addr, n0=n0, n1=n1, ddr_stride1=s1, buf_stride1=buf_stride1,
                     n2=n2, ddr_stride2=s2, sb0=sb0).encode()


def poison(ram, lo: int, length: int = 64):
    """Make reads and writes of RAM offsets ``[lo, lo + length)`` answer SLVERR; returns the function that undoes it."""
    read_orig, write_orig = ram.read_if._read, ram.write_if._write

    async def bad_read(address, n):
        if lo <= address % RAM_SIZE < lo + length:
            raise ValueError("poisoned")
        return await read_orig(address, n)

    async def bad_write(address, data):
        if lo <= address % RAM_SIZE < lo + length:
            raise ValueError("poisoned")
        return await write_orig(address, data)

    ram.read_if._read, ram.write_if._write = bad_read, bad_write

    def restore():
        ram.read_if._read, ram.write_if._write = read_orig, write_orig

    return restore


class AxiProtocolMonitor:
    """Checks every AR and AW request of the ``m_axi`` master and records the bursts.

    Requests must stay stable until their handshake, be at most ``MAX_BURST_BEATS`` long, never cross a 4 KiB page
    and lie inside the DDR window ``[PHYS_BASE, PHYS_BASE + WINDOW)``. ``bursts`` lists ``(channel, address,
    beats)`` of every accepted request.

    Parameters
    ----------
    dut : cocotb handle
        The bench top with ``m_axi__*`` signals and ``clk``.
    beat : int
        Bytes per data beat.
    """

    def __init__(self, dut, beat: int):
        self.dut = dut
        self.beat = beat
        self.bursts: list[tuple[str, int, int]] = []

    def start(self) -> None:
        """Start monitoring both address channels."""
        import cocotb

        cocotb.start_soon(self._monitor("ar"))
        cocotb.start_soon(self._monitor("aw"))

    async def _monitor(self, channel: str) -> None:
        dut, beat = self.dut, self.beat
        valid, ready = getattr(dut, f"m_axi__{channel}valid"), getattr(dut, f"m_axi__{channel}ready")
        addr, length = getattr(dut, f"m_axi__{channel}addr"), getattr(dut, f"m_axi__{channel}len")
        held = None
        while True:
            await FallingEdge(dut.clk)
            if not valid.value:
                assert held is None, f"{channel}valid dropped before the handshake"
                continue
            request = (int(addr.value), int(length.value))
            assert held is None or held == request, f"{channel} request changed while waiting: {held} -> {request}"
            held = request
            if ready.value:
                a, n = request
                beats = n + 1
                assert beats <= MAX_BURST_BEATS, f"{channel} burst of {beats} beats"
                assert a % AXI_PAGE_BYTES + beats * beat <= AXI_PAGE_BYTES, \
                    f"{channel} burst {a:#x} x{beats} crosses 4 KiB"
                assert PHYS_BASE <= a and a + beats * beat <= PHYS_BASE + WINDOW, f"{channel} {a:#x} outside window"
                self.bursts.append((channel, a, beats))
                held = None
