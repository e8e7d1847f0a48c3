"""cocotb bench of the DMA engine (:class:`~rtl.benches.DmaBench`) against cocotbext-axi's ``AxiRam``.

Every instruction is also executed by the golden model on the same DDR image; after each one the DDR window,
the guard areas around it and the buffers must match. Idle (R, B) and backpressure (AR, AW, W) generators are
crossed with the tests. The window is 1 MiB at physical 0x4010_0000; the RAM (4 MiB, aliased by address
modulo its size) holds it at offset 1 MiB, so everything outside [1 MiB, 2 MiB) is a guard area that must never
change.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge
from cocotbext.axi import AxiBus, AxiRam

from dlproc.processor.buffers import bytes_from_entries
from dlproc.processor.isa import Buffer, ErrorCode, Opcode
from dlproc.sim import golden
from dlproc.sim.golden import GoldenModel, RunResult

from .axi_bench import (
    BEAT,
    CONFIG,
    ISA,
    PHYS_BASE,
    RAM_SIZE,
    RAM_WINDOW,
    WINDOW,
    AxiProtocolMonitor,
    cycle_pause,
    load,
    poison,
    store,
)
from .benches import PEEK_BUFFERS, output_pattern


class TB:
    """Clock, reset, the RAM with its generators, the golden model and helpers to drive the DMA bench."""

    def __init__(self, dut):
        self.dut = dut
        self.log = dut._log
        Clock(dut.clk, 10, unit="ns").start()
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi", bus_separator="__"), dut.clk, dut.rst, size=RAM_SIZE)
        self.model = GoldenModel(CONFIG)
        self.model.out[:] = output_pattern(CONFIG)
        self.axi = AxiProtocolMonitor(dut, BEAT)
        self.bursts = self.axi.bursts
        self.axi.start()

    def set_idle_generator(self, generator=None):
        if generator:
            self.ram.write_if.b_channel.set_pause_generator(generator())
            self.ram.read_if.r_channel.set_pause_generator(generator())

    def set_backpressure_generator(self, generator=None):
        if generator:
            self.ram.write_if.aw_channel.set_pause_generator(generator())
            self.ram.write_if.w_channel.set_pause_generator(generator())
            self.ram.read_if.ar_channel.set_pause_generator(generator())

    async def reset(self):
        dut = self.dut
        dut.rst.value = 1
        dut.cmd__valid.value = 0
        dut.fc_cmd__ready.value = 1
        dut.fc_weights__ready.value = 1
        dut.ddr_base.value = PHYS_BASE
        dut.ddr_size.value = WINDOW
        dut.peek_buf.value = 0
        dut.peek_addr.value = 0
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        await RisingEdge(dut.clk)

    # ------------------------------------------------------------------ DDR images
    def fill_ddr(self, seed):
        """Random bytes in the whole RAM; the golden DDR is the window part."""
        rng = np.random.default_rng(seed)
        image = rng.integers(0, 256, RAM_SIZE, dtype=np.uint8)
        self.ram.write(0, image.tobytes())
        self.image = image
        self.ddr = image[RAM_WINDOW:RAM_WINDOW + WINDOW].copy()

    def check_ddr(self):
        got = np.frombuffer(self.ram.read(0, RAM_SIZE), np.uint8)
        expect = self.image.copy()
        expect[RAM_WINDOW:RAM_WINDOW + WINDOW] = self.ddr
        bad = np.flatnonzero(got != expect)
        assert bad.size == 0, (f"{bad.size} DDR bytes differ, first at RAM offset {bad[0]:#x} (window offset "
                               f"{bad[0] - RAM_WINDOW:#x}): got {got[bad[0]]} expected {expect[bad[0]]}")

    # ------------------------------------------------------------------ buffers
    async def peek(self, buf: int, count: int) -> list[int]:
        dut = self.dut
        values = []
        await FallingEdge(dut.clk)
        dut.peek_buf.value = buf
        for i in range(count):
            dut.peek_addr.value = i
            await FallingEdge(dut.clk)   # the synchronous read port took the address at the rising edge
            values.append(int(dut.peek_data.value))
        return values

    async def check_buffers(self):
        golden_bytes = {0: self.model.inp_bytes, 1: self.model.wgt_bytes, 2: self.model.par_bytes}
        entry_bytes = {0: CONFIG.input_entry_bytes, 1: CONFIG.weight_entry_bytes, 2: CONFIG.param_entry_bytes}
        for buf, name in enumerate(PEEK_BUFFERS):
            count = golden_bytes[buf].size // entry_bytes[buf]
            rows = await self.peek(buf, count)
            mask = (1 << (8 * entry_bytes[buf])) - 1
            got = bytes_from_entries([r & mask for r in rows], entry_bytes[buf])
            bad = np.flatnonzero(got != golden_bytes[buf])
            assert bad.size == 0, (f"{name} buffer differs at byte {bad[0]} (entry {bad[0] // entry_bytes[buf]}): "
                                   f"got {got[bad[0]]} expected {golden_bytes[buf][bad[0]]}")

    async def resync_buffers(self):
        """Copy the hardware buffers into the golden model (after a bus error the contents are unspecified)."""
        for buf, target, entry in ((0, self.model.inp_bytes, CONFIG.input_entry_bytes),
                                   (1, self.model.wgt_bytes, CONFIG.weight_entry_bytes),
                                   (2, self.model.par_bytes, CONFIG.param_entry_bytes)):
            rows = await self.peek(buf, target.size // entry)
            target[:] = bytes_from_entries([r & ((1 << (8 * entry)) - 1) for r in rows], entry)

    # ------------------------------------------------------------------ instructions
    async def execute(self, word: int, *, fc_beats: list | None = None, fc_ready_seed: int | None = None) -> int:
        """Run one instruction on the DMA; return the error code it reported (0 when none)."""
        dut = self.dut
        await FallingEdge(dut.clk)
        dut.cmd__payload.value = word
        dut.cmd__valid.value = 1
        while True:
            ready = int(dut.cmd__ready.value)
            await FallingEdge(dut.clk)
            if ready:
                break
        dut.cmd__valid.value = 0
        rng = random.Random(fc_ready_seed)
        code = 0
        cycles = 0
        while True:
            if dut.error.value:
                code = int(dut.error_code.value)
            if not dut.busy.value:
                break
            # ready takes effect before the next rising edge; valid does not depend on it.
            ready = int(rng.random() < 0.6) if fc_ready_seed is not None else 1
            dut.fc_weights__ready.value = ready
            if fc_beats is not None and dut.fc_weights__valid.value and ready:
                fc_beats.append(int(dut.fc_weights__payload.value))
            await FallingEdge(dut.clk)
            cycles += 1
            assert cycles < 200_000, "the DMA engine does not finish"
        dut.fc_weights__ready.value = 1
        return code

    def golden_execute(self, word: int) -> int:
        ins = ISA.decode(word)
        try:
            self.model.execute(ins, self.ddr, WINDOW, RunResult())
        except golden.Trap as trap:
            assert trap.code != ErrorCode.ILLEGAL_FIELD, f"test bug: illegal instruction {ins}: {trap}"
            return int(trap.code)
        return 0

    async def run(self, word: int) -> int:
        """Execute on both; compare the error code and DDR; return the code."""
        expect = self.golden_execute(word)
        got = await self.execute(word)
        assert got == expect, f"{ISA.disassemble([word])}: error {ErrorCode(got).name}, golden {ErrorCode(expect).name}"
        return got


async def setup(dut, idle=False, backpressure=False, seed=1) -> TB:
    tb = TB(dut)
    tb.set_idle_generator(cycle_pause if idle else None)
    tb.set_backpressure_generator(cycle_pause if backpressure else None)
    await tb.reset()
    tb.fill_ddr(seed)
    return tb


GENERATORS = dict(idle=[False, True], backpressure=[False, True])


@cocotb.test()
@cocotb.parametrize(**GENERATORS)
async def load_lengths_and_4k(dut, idle, backpressure):
    """LOAD of 1 to 600 beats at offsets around 4096, into all three buffers; buffers compared whole."""
    tb = await setup(dut, idle, backpressure, seed=2 + 2 * idle + backpressure)
    for beats in (1, 2, 3, 8, 255, 256, 257, 600):
        for offset in (4096 - BEAT, 4096 - 3 * BEAT, 8192 + 64 * BEAT):
            await tb.run(load(Buffer.INPUT, buf_addr=beats % 7, ddr_addr=offset, len0=beats * BEAT))
    # weight and parameter entries are several beats: start mid-page, chunks of whole and partial entries
    await tb.run(load(Buffer.WEIGHT, buf_addr=3, ddr_addr=4096 - 5 * BEAT, len0=40 * BEAT, n1=3, s1=4096, n2=2,
                      s2=3 * 4096 + 8 * BEAT))
    await tb.run(load(Buffer.PARAM, buf_addr=30, ddr_addr=12 * 4096 - BEAT, len0=64 * BEAT))
    await tb.run(load(Buffer.INPUT, buf_addr=1000, ddr_addr=WINDOW - 24 * BEAT, len0=24 * BEAT))
    await tb.check_buffers()
    assert any(a % 4096 + n * BEAT == 4096 for ch, a, n in tb.bursts if ch == "ar"), "no burst ended at 4 KiB"
    assert max(n for _, _, n in tb.bursts) == 256


@cocotb.test()
@cocotb.parametrize(**GENERATORS)
async def store_patterns_and_guards(dut, idle, backpressure):
    """STORE rows of 1 to 600 beats, strided rows and sub-blocks, around 4 KiB; whole RAM compared."""
    tb = await setup(dut, idle, backpressure, seed=10 + 2 * idle + backpressure)
    sub = CONFIG.subblocks_per_output
    cases = [
        store(buf_addr=0, ddr_addr=4096 - BEAT, n0=1),
        store(buf_addr=5, ddr_addr=8192 - 2 * BEAT, n0=3, sb0=sub - 1),
        store(buf_addr=0, ddr_addr=3 * 4096 - 100 * BEAT, n0=255),
        store(buf_addr=0, ddr_addr=30 * 4096, n0=256, n1=2, s1=4096, buf_stride1=0),     # 256-beat bursts
        store(buf_addr=0, ddr_addr=5 * 4096 - 64 * BEAT, n0=256, n2=sub, s2=4096 + 16 * BEAT),
        store(buf_addr=0, ddr_addr=9 * 4096 - 4 * BEAT, n0=250, n1=2, s1=2 * 4096, buf_stride1=6),
        store(buf_addr=10, ddr_addr=20 * 4096 + 8 * BEAT, n0=7, n1=5, s1=16 * BEAT, buf_stride1=9, n2=2,
              s2=4096 - 8 * BEAT, sb0=0),
        store(buf_addr=3, ddr_addr=WINDOW - 2 * 4096, n0=2, n1=3, s1=0, buf_stride1=0),  # rows onto one place
        store(buf_addr=0, ddr_addr=WINDOW - CONFIG.input_entry_bytes * 4, n0=4),          # ends at the window end
    ]
    for word in cases:
        await tb.run(word)
        tb.check_ddr()
    assert any(ch == "aw" and n == 256 for ch, _, n in tb.bursts)


@cocotb.test()
async def window_refusals(dut):
    """Chunks outside the window raise DDR_WINDOW and are never issued; earlier chunks complete."""
    tb = await setup(dut, seed=20)
    # LOAD: third chunk crosses the window end -> two chunks loaded, then DDR_WINDOW.
    code = await tb.run(load(Buffer.INPUT, buf_addr=0, ddr_addr=WINDOW - 3 * 16 * BEAT, len0=20 * BEAT, n1=3,
                             s1=16 * BEAT))
    assert code == ErrorCode.DDR_WINDOW
    await tb.run(load(Buffer.INPUT, buf_addr=0, ddr_addr=WINDOW, len0=BEAT))           # first byte outside
    await tb.run(load(Buffer.WEIGHT, buf_addr=0, ddr_addr=0xFFFF_FFF0 & -BEAT, len0=BEAT))
    await tb.check_buffers()
    # STORE: the second row is refused, the first is written.
    code = await tb.run(store(buf_addr=0, ddr_addr=WINDOW - 12 * BEAT, n0=2, n1=3, s1=8 * BEAT, buf_stride1=2))
    assert code == ErrorCode.DDR_WINDOW
    await tb.run(store(buf_addr=0, ddr_addr=0, n0=1, n2=2, s2=0x8000_0000))
    # A huge stride (offset beyond 32 bits) must not wrap around into the window.
    await tb.run(load(Buffer.INPUT, buf_addr=0, ddr_addr=0, len0=BEAT, n1=2, s1=0xFFFF_FFFC, n2=2, s2=4 * BEAT))
    tb.check_ddr()
    # Window changed at run time: only [0, 64 KiB) allowed now.
    dut.ddr_size.value = 1 << 16
    got = await tb.execute(load(Buffer.INPUT, buf_addr=0, ddr_addr=(1 << 16) - 2 * BEAT, len0=4 * BEAT))
    assert got == ErrorCode.DDR_WINDOW
    dut.ddr_size.value = WINDOW
    assert all(a < PHYS_BASE + WINDOW for _, a, _ in tb.bursts)


@cocotb.test()
async def bus_errors(dut):
    """SLVERR on R or B raises AXI_READ_ERROR / AXI_WRITE_ERROR; the engine stops cleanly and works after."""
    tb = await setup(dut, seed=30)
    restore = poison(tb.ram, RAM_WINDOW + 0x3000)
    # The poisoned beat is in the second chunk; later chunks are not issued, outstanding ones drained.
    got = await tb.execute(load(Buffer.INPUT, buf_addr=0, ddr_addr=0x3000 - 300 * BEAT, len0=256 * BEAT, n1=3,
                                s1=256 * BEAT))
    assert got == ErrorCode.AXI_READ_ERROR
    got = await tb.execute(store(buf_addr=0, ddr_addr=0x3000 - 16 * BEAT, n0=40))
    assert got == ErrorCode.AXI_WRITE_ERROR
    restore()
    await tb.resync_buffers()
    tb.ddr[:] = np.frombuffer(tb.ram.read(RAM_WINDOW, WINDOW), np.uint8)
    # Clean operation afterwards.
    await tb.run(load(Buffer.INPUT, buf_addr=4, ddr_addr=0x3000 - 8 * BEAT, len0=300 * BEAT))
    await tb.run(store(buf_addr=2, ddr_addr=0x2000, n0=30, n2=2, s2=0x1000))
    await tb.check_buffers()
    tb.check_ddr()


@cocotb.test()
@cocotb.parametrize(backpressure=[False, True])
async def fc_weight_stream(dut, backpressure):
    """FC streams its rows in order to the fc unit; an FC with a row outside the window starts nothing."""
    tb = await setup(dut, backpressure=backpressure, seed=40)
    row_entries = 3
    row_bytes = row_entries * CONFIG.input_entry_bytes
    n_out, stride, addr = 5, 4096 - 2 * BEAT, 4096 - 2 * BEAT
    word = ISA.encode(Opcode.FC, ddr_addr=addr, row_stride=stride, n_out=n_out, n_in=row_entries)
    fc_cmds = []

    async def watch_cmd():
        while True:
            await FallingEdge(dut.clk)
            if dut.fc_cmd__valid.value and dut.fc_cmd__ready.value:
                fc_cmds.append(int(dut.fc_cmd__payload.value))

    watcher = cocotb.start_soon(watch_cmd())
    beats: list[int] = []
    assert await tb.execute(word, fc_beats=beats, fc_ready_seed=7 if backpressure else None) == 0
    expect = b"".join(tb.ddr[addr + o * stride:addr + o * stride + row_bytes].tobytes() for o in range(n_out))
    got = b"".join(b.to_bytes(BEAT, "little") for b in beats)
    assert got == expect
    assert fc_cmds == [word]
    # Last row one beat past the window end: refused before the fc unit is started.
    bad = ISA.encode(Opcode.FC, ddr_addr=WINDOW + BEAT - row_bytes - 2 * stride, row_stride=stride, n_out=3,
                     n_in=row_entries)
    beats.clear()
    assert await tb.execute(bad, fc_beats=beats) == ErrorCode.DDR_WINDOW
    assert beats == [] and fc_cmds == [word]
    watcher.cancel()
