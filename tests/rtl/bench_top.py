"""cocotb bench of the whole processor against the golden device: registers, programs, errors.

The host side is cocotbext-axi's ``AxiLiteMaster`` on ``s_axil``; DDR is an ``AxiRam`` on ``m_axi`` (4 MiB,
aliased by address modulo its size). The DDR window is moved to physical 0x4010_0000 (RAM offset 1 MiB) and
sized 1 MiB through the registers, so the rest of the RAM is a guard area. Each program runs on the RTL and on
:class:`~dlproc.sim.golden.GoldenDevice` with the same DDR image; STATUS, ERROR_CODE, ERROR_PC, PC, the event
log and the whole RAM must agree. The output buffer starts with :func:`~rtl.benches.output_pattern` in both, so
STORE has data to write without GEMM/POST (``bench_system`` covers those).
"""

from __future__ import annotations

import itertools
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from dlproc.processor.config import INSTRUCTION_BYTES, ISA_VERSION
from dlproc.processor.isa import (
    CTRL_CLEAR,
    CTRL_IRQ_EN,
    CTRL_START,
    MAGIC,
    STATUS_BUSY,
    STATUS_DONE,
    STATUS_ERROR,
    Buffer,
    ErrorCode,
    Opcode,
    Reg,
)
from dlproc.processor.rules import load_buffers
from dlproc.sim.golden import GoldenDevice

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
from .benches import output_pattern


class TB:
    """Clock, reset, register master, DDR model and the golden device kept in step with the RTL."""

    def __init__(self, dut, *, preloaded_output: bool = True):
        self.dut = dut
        Clock(dut.clk, 10, unit="ns").start()
        self.regs = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"), dut.clk, dut.rst)
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi", bus_separator="__"), dut.clk, dut.rst, size=RAM_SIZE)
        self.golden = GoldenDevice(CONFIG, ddr_size=WINDOW, check_hazards=False)
        if preloaded_output:
            self.golden.model.out[:] = output_pattern(CONFIG)
        rng = np.random.default_rng(99)
        self.image = rng.integers(0, 256, RAM_SIZE, dtype=np.uint8)
        self.ram.write(0, self.image.tobytes())
        self.golden.ddr[:] = self.image[RAM_WINDOW:RAM_WINDOW + WINDOW]
        self.axi = AxiProtocolMonitor(dut, BEAT)
        self.bursts = self.axi.bursts
        self.axi.start()

    def set_generators(self, idle: bool, backpressure: bool):
        if idle:
            self.ram.write_if.b_channel.set_pause_generator(cycle_pause())
            self.ram.read_if.r_channel.set_pause_generator(cycle_pause())
        if backpressure:
            self.ram.write_if.aw_channel.set_pause_generator(cycle_pause())
            self.ram.write_if.w_channel.set_pause_generator(cycle_pause())
            self.ram.read_if.ar_channel.set_pause_generator(cycle_pause())

    async def reset(self):
        self.dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        for _ in range(2):
            await RisingEdge(self.dut.clk)

    async def read(self, reg: int) -> int:
        return await self.regs.read_dword(int(reg))

    async def write(self, reg: int, value: int) -> None:
        await self.regs.write_dword(int(reg), value)

    async def use_window(self):
        for reg, value in ((Reg.DDR_BASE_LO, PHYS_BASE & 0xFFFF_FFFF), (Reg.DDR_BASE_HI, PHYS_BASE >> 32),
                           (Reg.DDR_SIZE, WINDOW)):
            await self.write(reg, value)
            self.golden.write_reg(reg, value)

    def put(self, offset: int, blob: bytes) -> None:
        """Write bytes into the window of both DDRs."""
        self.ram.write(RAM_WINDOW + offset, blob)
        self.golden.write_ddr(offset, blob)
        self.image[RAM_WINDOW + offset:RAM_WINDOW + offset + len(blob)] = np.frombuffer(blob, np.uint8)

    def check_ddr(self, what: str) -> None:
        got = np.frombuffer(self.ram.read(0, RAM_SIZE), np.uint8)
        expect = self.image.copy()
        expect[RAM_WINDOW:RAM_WINDOW + WINDOW] = self.golden.ddr
        bad = np.flatnonzero(got != expect)
        assert bad.size == 0, (f"{what}: {bad.size} DDR bytes differ, first at window offset "
                               f"{bad[0] - RAM_WINDOW:#x}: got {got[bad[0]]} expected {expect[bad[0]]}")
        self.image[:] = got

    async def run(self, words: list[int], instr_addr: int, *, count: int | None = None, what: str = "program",
                  compare_events: bool = True, max_cycles: int = 200_000) -> dict[str, int]:
        """Run a program on both; compare status, error, PC, events and DDR. Return the RTL's registers."""
        count = len(words) if count is None else count
        if words:
            self.put(instr_addr & ~(INSTRUCTION_BYTES - 1), ISA.to_bytes(words))
        for reg, value in ((Reg.INSTR_ADDR, instr_addr), (Reg.INSTR_COUNT, count)):
            await self.write(reg, value)
            self.golden.write_reg(reg, value)
        await self.write(Reg.CTRL, CTRL_CLEAR)
        self.golden.write_reg(Reg.CTRL, CTRL_CLEAR)
        await self.write(Reg.CTRL, CTRL_START | CTRL_IRQ_EN)
        self.golden.write_reg(Reg.CTRL, CTRL_START | CTRL_IRQ_EN)
        cycles = 0
        while not self.dut.irq.value:
            await RisingEdge(self.dut.clk)
            cycles += 1
            assert cycles < max_cycles, f"{what}: no interrupt after {max_cycles} cycles (PC {await self.read(Reg.PC)})"
        got = {reg.name: await self.read(reg) for reg in (Reg.STATUS, Reg.ERROR_CODE, Reg.ERROR_PC, Reg.PC,
                                                          Reg.EVENT_COUNT, Reg.CYCLES_LO, Reg.DMA_WR_BEATS)}
        expect = {name: self.golden.read_reg(Reg[name]) for name in ("STATUS", "ERROR_CODE", "ERROR_PC", "PC")}
        listing = ISA.disassemble(words)
        for name, value in expect.items():
            assert got[name] == value, (f"{what}: {name} = {got[name]}, golden {value} "
                                        f"({self.golden.last_result.message})\n{listing}")
        if compare_events:
            events = self.golden.last_result.events
            assert got["EVENT_COUNT"] == len(events), f"{what}: EVENT_COUNT {got['EVENT_COUNT']} != {len(events)}"
            last_cycle = 0
            for i, (layer, _pc) in enumerate(events):
                await self.write(Reg.EVENT_INDEX, i)
                assert await self.read(Reg.EVENT_ID) == layer
                cycle = await self.read(Reg.EVENT_CYCLE_LO) | await self.read(Reg.EVENT_CYCLE_HI) << 32
                assert last_cycle <= cycle <= got["CYCLES_LO"], f"{what}: event {i} cycle {cycle}"
                last_cycle = cycle
        self.check_ddr(f"{what}\n{listing}\n")
        return got


SYNC, END = ISA.encode(Opcode.SYNC), ISA.encode(Opcode.END)


def mark(layer):
    return ISA.encode(Opcode.MARK, layer=layer)


async def setup(dut, idle=False, backpressure=False) -> TB:
    tb = TB(dut)
    tb.set_generators(idle, backpressure)
    await tb.reset()
    return tb


@cocotb.test()
async def register_map(dut):
    """Identification registers, reset values, read/write registers, unknown offsets, STATUS at rest."""
    tb = await setup(dut)
    assert await tb.read(Reg.MAGIC) == MAGIC
    assert await tb.read(Reg.ISA_VERSION) == ISA_VERSION
    assert await tb.read(Reg.CONFIG_HASH) == CONFIG.hardware_hash_int
    assert await tb.read(Reg.DDR_BASE_LO) == CONFIG.ddr_base & 0xFFFF_FFFF
    assert await tb.read(Reg.DDR_BASE_HI) == CONFIG.ddr_base >> 32
    assert await tb.read(Reg.DDR_SIZE) == CONFIG.ddr_size
    assert await tb.read(Reg.STATUS) == 0
    for reg, value in ((Reg.INSTR_ADDR, 0x1234_5660), (Reg.INSTR_COUNT, 77), (Reg.EVENT_INDEX, 5)):
        await tb.write(reg, value)
        assert await tb.read(reg) == value
    for offset in (0x34, 0x64, 0x100, 0xFFC):
        await tb.write(offset, 0xFFFF_FFFF)
        assert await tb.read(offset) == 0
    assert await tb.read(Reg.MAGIC) == MAGIC  # a write to a read-only register does nothing
    await tb.write(Reg.MAGIC, 0)
    assert await tb.read(Reg.MAGIC) == MAGIC
    await tb.write(Reg.CTRL, CTRL_IRQ_EN)
    assert await tb.read(Reg.CTRL) == CTRL_IRQ_EN
    await tb.write(Reg.CTRL, 0)
    assert not dut.irq.value


@cocotb.test()
@cocotb.parametrize(idle=[False, True], backpressure=[False, True])
async def load_store_programs(dut, idle, backpressure):
    """Small programs of LOAD / STORE / FC / SYNC / MARK / END; counters and the event log."""
    tb = await setup(dut, idle, backpressure)
    await tb.use_window()
    prog_at = 0x8000
    words = [mark(1), load(Buffer.INPUT, 0, 0x1000 - 8 * BEAT, 300 * BEAT), mark(2),
             store(0, 0x20000 - 4 * BEAT, n0=70, n1=2, s1=0x1000, buf_stride1=3, n2=2, s2=0x3000), SYNC,
             ISA.encode(Opcode.FC, ddr_addr=0x5000, row_stride=0x100, n_out=9, n_in=2), SYNC,
             store(7, 0x31000, n0=2, sb0=1), mark(3), END]
    got = await tb.run(words, prog_at, what="program 1")
    assert got["STATUS"] == STATUS_DONE
    assert got["DMA_WR_BEATS"] == (70 * 2 * 2 + 2) * CONFIG.input_entry_bytes // BEAT
    assert got["CYCLES_LO"] > 300
    # Run a second program from another address without reset; INSTR_ADDR low bits are ignored.
    words = [store(100, 0x40000, n0=16), mark(7), END, store(0, 0, n0=1)]
    got = await tb.run(words, 0x7_0000 + 7, what="program 2")
    assert got["STATUS"] == STATUS_DONE and got["PC"] == 2
    assert not any(ch == "aw" and a == PHYS_BASE for ch, a, _ in tb.bursts), "instruction after END executed"


@cocotb.test()
async def stops_and_errors(dut):
    """PROGRAM_END, illegal opcode/field, fetch and data outside the window; CLEAR and START again."""
    tb = await setup(dut)
    await tb.use_window()
    cases = [
        ("empty program", [], 0x100, 0),
        ("no END", [mark(1), SYNC], 0x100, None),
        ("zero word", [mark(1), 0, END], 0x100, None),
        ("opcode 15", [15, END], 0x100, None),
        ("zero extent", [mark(4), load(n1=0), END], 0x100, None),
        ("bad sub-block", [store(sb0=CONFIG.subblocks_per_output), END], 0x100, None),
        ("load outside", [load(ddr_addr=WINDOW - BEAT, len0=2 * BEAT), END], 0x100, None),
        ("store row outside", [store(0, WINDOW - 40 * BEAT, n0=4, n1=4, s1=16 * BEAT), mark(9), END], 0x200, None),
        ("program runs out of the window", [mark(1), mark(2), SYNC], WINDOW - 3 * INSTRUCTION_BYTES, 5),
        ("program starts outside", [], WINDOW, 3),
        ("huge count", [mark(1)] * 3, WINDOW - 3 * INSTRUCTION_BYTES, 0xFFFF_FFFF),
    ]
    for what, words, addr, count in cases:
        got = await tb.run(words, addr, count=count, what=what)
        assert got["STATUS"] == STATUS_ERROR, what
    # After an error, a good program runs.
    got = await tb.run([store(3, 0x9000, n0=5), END], 0x300, what="after errors")
    assert got["STATUS"] == STATUS_DONE
    # START while busy is ignored; CLEAR clears DONE.
    await tb.write(Reg.CTRL, CTRL_CLEAR)
    assert await tb.read(Reg.STATUS) == 0
    tb.put(0x400, ISA.to_bytes([load(ddr_addr=0, len0=500 * BEAT), END]))
    await tb.write(Reg.INSTR_ADDR, 0x400)
    await tb.write(Reg.INSTR_COUNT, 2)
    await tb.write(Reg.CTRL, CTRL_START)
    status = await tb.read(Reg.STATUS)
    assert status & STATUS_BUSY
    await tb.write(Reg.CTRL, CTRL_START)
    while await tb.read(Reg.STATUS) & STATUS_BUSY:
        pass
    assert await tb.read(Reg.STATUS) == STATUS_DONE and await tb.read(Reg.PC) == 1


@cocotb.test()
async def bus_errors(dut):
    """SLVERR on a LOAD reports its own ERROR_PC even after later instructions were dispatched; fetch SLVERR."""
    tb = await setup(dut)
    await tb.use_window()
    restore = poison(tb.ram, RAM_WINDOW + 0x6000)
    gemm = ISA.encode(Opcode.GEMM, r0=1, r1=1, r2=1, s0=1, s1=1)
    words = [load(ddr_addr=0x6000 - 64 * BEAT, len0=200 * BEAT), gemm, mark(5), gemm, SYNC, END]
    tb.put(0x100, ISA.to_bytes(words))
    await tb.write(Reg.INSTR_ADDR, 0x100)
    await tb.write(Reg.INSTR_COUNT, len(words))
    await tb.write(Reg.CTRL, CTRL_CLEAR)
    await tb.write(Reg.CTRL, CTRL_START)
    while await tb.read(Reg.STATUS) & STATUS_BUSY:
        pass
    assert await tb.read(Reg.STATUS) == STATUS_ERROR
    assert await tb.read(Reg.ERROR_CODE) == ErrorCode.AXI_READ_ERROR
    assert await tb.read(Reg.ERROR_PC) == 0
    words = [store(0, 0x6000 - 8 * BEAT, n0=20), END]
    tb.put(0x200, ISA.to_bytes(words))
    await tb.write(Reg.INSTR_ADDR, 0x200)
    await tb.write(Reg.INSTR_COUNT, len(words))
    await tb.write(Reg.CTRL, CTRL_CLEAR)
    await tb.write(Reg.CTRL, CTRL_START)
    while await tb.read(Reg.STATUS) & STATUS_BUSY:
        pass
    assert await tb.read(Reg.ERROR_CODE) == ErrorCode.AXI_WRITE_ERROR
    # The third instruction of a program sits on the poisoned bytes.
    words = [mark(1), SYNC, END, END]
    tb.put(0x6000 - 2 * INSTRUCTION_BYTES, ISA.to_bytes(words))
    await tb.write(Reg.INSTR_ADDR, 0x6000 - 2 * INSTRUCTION_BYTES)
    await tb.write(Reg.INSTR_COUNT, len(words))
    await tb.write(Reg.CTRL, CTRL_CLEAR)
    await tb.write(Reg.CTRL, CTRL_START)
    while await tb.read(Reg.STATUS) & STATUS_BUSY:
        pass
    assert await tb.read(Reg.ERROR_CODE) == ErrorCode.AXI_READ_ERROR
    assert await tb.read(Reg.ERROR_PC) == 2
    restore()
    tb.golden.ddr[:] = np.frombuffer(tb.ram.read(RAM_WINDOW, WINDOW), np.uint8)
    tb.image[:] = np.frombuffer(tb.ram.read(0, RAM_SIZE), np.uint8)
    got = await tb.run([store(1, 0x6000, n0=30), END], 0x300, what="after bus errors")
    assert got["STATUS"] == STATUS_DONE


def random_program(rng: random.Random) -> tuple[list[int], int, int | None]:
    """A random program of DMA, FC and control instructions with occasional faults."""
    words = []
    for _ in range(rng.randint(1, 12)):
        kind = rng.random()
        if kind < 0.3:
            buf = rng.choice(load_buffers(CONFIG))  # the buffers this processor has
            entry = {Buffer.INPUT: CONFIG.input_entry_bytes, Buffer.WEIGHT: CONFIG.weight_entry_bytes,
                     Buffer.PARAM: CONFIG.param_entry_bytes}[buf]
            len0 = BEAT * rng.randint(1, 40)
            n1, n2 = rng.randint(1, 3), rng.randint(1, 2)
            entries = {Buffer.INPUT: CONFIG.input_entries, Buffer.WEIGHT: CONFIG.weight_entries,
                       Buffer.PARAM: CONFIG.param_buffer_entries}[buf]
            need = -(-len0 * n1 * n2 // entry)
            words.append(load(buf, rng.randint(0, max(0, entries - need)), BEAT * rng.randint(0, WINDOW // BEAT - 1),
                              len0, n1, BEAT * rng.randint(0, 2000), n2, BEAT * rng.randint(0, 5000)))
        elif kind < 0.55:
            n0, n1 = rng.randint(1, 20), rng.randint(1, 3)
            stride = rng.randint(0, 20)
            n2 = rng.randint(1, CONFIG.subblocks_per_output)
            words.append(store(rng.randint(0, max(0, CONFIG.acc_buffer_entries - n0 - (n1 - 1) * stride)),
                               BEAT * rng.randint(0x300 // BEAT, WINDOW // BEAT - 1), n0, n1,
                               BEAT * rng.randint(0, 500), stride, n2, BEAT * rng.randint(0, 3000),
                               rng.randint(0, CONFIG.subblocks_per_output - n2)))
        elif kind < 0.62:
            words.append(ISA.encode(Opcode.FC, ddr_addr=BEAT * rng.randint(0, WINDOW // BEAT - 1),
                                    row_stride=BEAT * rng.randint(0, 100), n_out=rng.randint(1, 20),
                                    n_in=rng.randint(1, 8), inp_base=rng.randint(0, 100)))
        elif kind < 0.75:
            words.append(SYNC)
        elif kind < 0.9:
            words.append(mark(rng.randint(0, 0xFFFF)))
        elif kind < 0.95:
            words.append(rng.choice([0, 12, load(n2=0), store(n0=0)]))
        else:
            words.append(END)
    if rng.random() < 0.85:
        words.append(END)
    addr = INSTRUCTION_BYTES * rng.randint(0, 0x300 // INSTRUCTION_BYTES - len(words))
    if rng.random() < 0.1:
        addr = WINDOW - INSTRUCTION_BYTES * rng.randint(0, len(words))
    count = None if rng.random() < 0.9 else rng.randint(0, len(words) + 2)
    return words, addr, count


@cocotb.test()
@cocotb.parametrize(backpressure=[False, True])
async def random_programs(dut, backpressure):
    """Random programs (faults included) against the golden device."""
    tb = await setup(dut, idle=backpressure, backpressure=backpressure)
    await tb.use_window()
    rng = random.Random(5 + backpressure)
    outcomes = set()
    for i in range(40):
        words, addr, count = random_program(rng)
        if addr + INSTRUCTION_BYTES * len(words) > WINDOW:
            tb.put(addr, ISA.to_bytes(words)[:WINDOW - addr])
            got = await tb.run([], addr, count=len(words) if count is None else count, what=f"random {i}")
        else:
            got = await tb.run(words, addr, count=count, what=f"random {i}")
        outcomes.add(got["ERROR_CODE"])
    assert {ErrorCode.NONE, ErrorCode.DDR_WINDOW} <= outcomes, outcomes


@cocotb.test()
async def dma_throughput(dut):
    """Cycles of one LOAD or STORE program as a function of its size: about one beat per cycle plus a constant."""
    tb = await setup(dut)
    await tb.use_window()
    results = {}
    for kind, beats in itertools.product(("load", "store"), (1, 16, 256, 1024)):
        if kind == "load":
            word = load(Buffer.INPUT, 0, 0x10000, beats * BEAT)
        else:
            word = store(0, 0x20000, n0=min(beats, CONFIG.acc_buffer_entries), n1=max(1, beats // 256), s1=1024)
        got = await tb.run([word, END], 0x1000, what=f"{kind} {beats}", compare_events=False)
        results[kind, beats] = got["CYCLES_LO"]
    empty = await tb.run([END], 0x1000, what="END only", compare_events=False)
    dut._log.info(f"cycles: END only {empty['CYCLES_LO']}, " + ", ".join(
        f"{kind} {beats} beats {cycles}" for (kind, beats), cycles in results.items()))
    for (_kind, beats), cycles in results.items():
        assert cycles <= beats + 60, f"{beats} beats took {cycles} cycles"
