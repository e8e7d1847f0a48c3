"""The fetch unit alone in Amaranth's simulator against a behavioural AXI read slave.

Checks program order, the window fault in place of the first instruction outside the window, INSTR_COUNT as a
hard limit of the requests, the 4 KiB rule, SLVERR, dropping of a stopped run's data at the next START, and the
narrow 32-byte beats used on a 512-bit bus.
"""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from dlproc.processor.config import INSTRUCTION_BYTES, ProcessorConfig
from dlproc.processor.fetch import FetchUnit
from dlproc.processor.isa import ErrorCode, InstructionSet, IsaError, Opcode
from dlproc.processor.rules import violation

CONFIGS = {
    32: ProcessorConfig.preset("tiny_int8"),
    128: ProcessorConfig.preset("zcu102_int8"),
    512: ProcessorConfig(conv_ic_lanes=64, conv_oc_lanes=64, fc_threads=16, axi_data_width=512,
                         input_buffer_kib=64, weight_buffer_kib=256, acc_buffer_entries=256),
}
BASE = 0x4000_0000
DDR = 1 << 16


class Slave:
    """AXI read slave: random AR acceptance and R latency/gaps; narrow beats as AXI defines them."""

    def __init__(self, dut, config, rng, memory, poison=()):
        self.dut, self.rng, self.memory = dut, rng, memory
        self.bytes = config.beat_bytes
        self.poison = set(poison)
        self.bursts: list[tuple[int, int, int]] = []
        self.pending: list[tuple[int, int, bool]] = []   # (data, resp, last)
        self.stopped = False

    def beats_of(self, addr, length, size):
        out = []
        step = 1 << size
        for k in range(length + 1):
            a = addr + k * step
            offset = a - BASE
            lane_base = a & ~(self.bytes - 1)
            word = self.rng.getrandbits(8 * self.bytes)   # garbage in the lanes the beat does not carry
            chunk = int.from_bytes(bytes(self.memory[offset:offset + step]), "little")
            shift = 8 * (a - lane_base)
            word = (word & ~(((1 << (8 * step)) - 1) << shift)) | (chunk << shift)
            resp = 2 if any(p <= offset < p + step for p in self.poison) else 0
            out.append((word, resp, k == length))
        return out

    async def run(self, ctx):
        dut = self.dut
        while True:
            ctx.set(dut.ar.ready, self.rng.random() < 0.6)
            beat = self.pending[0] if self.pending and self.rng.random() < 0.7 else None
            ctx.set(dut.r.valid, beat is not None)
            if beat is not None:
                ctx.set(dut.r.payload.data, beat[0])
                ctx.set(dut.r.payload.resp, beat[1])
                ctx.set(dut.r.payload.last, beat[2])
            ar_fire = ctx.get(dut.ar.valid) and ctx.get(dut.ar.ready)
            if ar_fire:
                req = (ctx.get(dut.ar.payload.addr), ctx.get(dut.ar.payload.len), ctx.get(dut.ar.payload.size))
            r_fire = beat is not None and ctx.get(dut.r.ready)
            await ctx.tick()
            if ar_fire:
                addr, length, size = req
                assert addr % 4096 + (length + 1) * (1 << size) <= 4096, f"burst at {addr:#x} crosses 4 KiB"
                self.bursts.append(req)
                self.pending += self.beats_of(addr, length, size)
            if r_fire:
                self.pending.pop(0)


def golden_fault(config: ProcessorConfig, word: int) -> ErrorCode:
    """The verdict of the golden model's rules on one fetched word."""
    isa = InstructionSet(config)
    try:
        ins = isa.decode(word)
    except IsaError:
        return ErrorCode.ILLEGAL_OPCODE
    return ErrorCode.NONE if violation(ins, config) is None else ErrorCode.ILLEGAL_FIELD


def expected_run(config, words):
    """(word, fault) pairs the consumer sees: every word with its golden verdict, up to the first faulted one."""
    out = []
    for w in words:
        out.append((w, golden_fault(config, w)))
        if out[-1][1] != ErrorCode.NONE:
            break
    return out


def simulate(width, runs, *, poison=(), seed=0, patch=None):
    """Run a sequence of (instr_addr, count, ddr_size, consume) fetch runs; return what the consumer saw.

    The memory is random, with the opcode of every 32-byte word set to MARK (always legal) unless ``patch``
    (byte offset -> instruction word) replaces the word.
    """
    config = CONFIGS[width]
    rng = random.Random(seed)
    dut = FetchUnit(config=config)
    memory = bytearray(rng.getrandbits(8) for _ in range(DDR))
    for at in range(0, DDR, INSTRUCTION_BYTES):
        memory[at] = (memory[at] & 0xF0) | Opcode.MARK
    for at, w in (patch or {}).items():
        memory[at:at + INSTRUCTION_BYTES] = w.to_bytes(INSTRUCTION_BYTES, "little")
    slave = Slave(dut, config, rng, memory, poison)
    seen = []

    async def host(ctx):
        ctx.set(dut.ddr_base, BASE)
        for instr_addr, count, size, consume in runs:
            ctx.set(dut.instr_addr, instr_addr)
            ctx.set(dut.instr_count, count)
            ctx.set(dut.ddr_size, size)
            ctx.set(dut.start, 1)
            ctx.set(dut.active, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            got = []
            idle = 0
            while len(got) < consume and idle < 3000:
                ready = rng.random() < 0.5
                ctx.set(dut.instr.ready, ready)
                fire = ready and ctx.get(dut.instr.valid)
                payload = ctx.get(dut.instr.payload)
                await ctx.tick()
                idle += 1
                if fire:
                    got.append((int(payload.word), ErrorCode(int(payload.fault))))
                    idle = 0
                    if got[-1][1] != ErrorCode.NONE:
                        break
            ctx.set(dut.instr.ready, 0)
            ctx.set(dut.active, 0)
            for _ in range(rng.randint(0, 30)):
                await ctx.tick()
            seen.append(got)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(slave.run, background=True)
    sim.add_testbench(host)
    sim.run()

    def word(pc, instr_addr):
        start = (instr_addr & ~(INSTRUCTION_BYTES - 1)) + pc * INSTRUCTION_BYTES
        return int.from_bytes(bytes(memory[start:start + INSTRUCTION_BYTES]), "little")

    return seen, word, slave


@pytest.mark.parametrize("width", sorted(CONFIGS))
def test_program_order_window_and_count(width):
    runs = [(0x1000 - 3 * 32 + 5, 40, DDR, 40),         # low bits ignored, crosses 4 KiB
            (DDR - 5 * 32, 9, DDR, 9),                    # instruction 5 is outside the window
            (0x100, 3, DDR, 3),                           # short program
            (0x2000, 100, DDR, 7),                        # stopped early: its data must not leak ...
            (0x3000, 12, DDR - 0x3000 - 16, 12)]          # ... into this run; the last one is half outside
    seen, word, slave = simulate(width, runs, seed=width)
    for (addr, count, size, consume), got in zip(runs, seen, strict=True):
        base = addr & ~31
        inside = max(0, (size - base) // 32)
        expect = expected_run(CONFIGS[width], [word(pc, addr) for pc in range(min(count, inside, consume))])
        assert [f for _, f in expect] == [ErrorCode.NONE] * len(expect)
        if inside < min(count, consume):
            expect.append((0, ErrorCode.DDR_WINDOW))
        assert got == expect, f"run at {addr:#x}"
    for addr, length, size in slave.bursts:
        assert (1 << size) == min(32, CONFIGS[width].beat_bytes)
        assert BASE <= addr and addr + (length + 1) * (1 << size) <= BASE + DDR


def test_slverr_marks_the_instruction():
    poison = [0x500 + 2 * 32 + 8]
    seen, word, _ = simulate(32, [(0x500, 6, DDR, 6), (0x700, 2, DDR, 2)], poison=poison, seed=3)
    assert seen[0] == [(word(0, 0x500), ErrorCode.NONE), (word(1, 0x500), ErrorCode.NONE)] + [
        (seen[0][2][0], ErrorCode.AXI_READ_ERROR)]
    assert seen[1] == [(word(0, 0x700), ErrorCode.NONE), (word(1, 0x700), ErrorCode.NONE)]


@pytest.mark.parametrize("width", [32, 128])
def test_illegal_words_carry_the_checker_verdict(width):
    """Words reach the FIFO with the golden verdict of their fields, in order, behind the checker's pipeline."""
    config = CONFIGS[width]
    isa = InstructionSet(config)
    bad_field = isa.encode(Opcode.LOAD, buffer=0, buf_addr=0, ddr_addr=0, len0=config.beat_bytes,
                           n1=config.input_entries, ddr_stride1=0, n2=config.input_entry_bytes, ddr_stride2=0)
    bad_opcode = 0xABC0 | 11
    seen, word, _ = simulate(width, [(0x800, 8, DDR, 8), (0x900, 8, DDR, 8)], seed=5,
                             patch={0x800 + 5 * 32: bad_field, 0x900 + 2 * 32: bad_opcode})
    assert seen[0] == expected_run(config, [word(pc, 0x800) for pc in range(8)])
    assert seen[0][-1] == (bad_field, ErrorCode.ILLEGAL_FIELD) and len(seen[0]) == 6
    assert seen[1] == expected_run(config, [word(pc, 0x900) for pc in range(8)])
    assert seen[1][-1] == (bad_opcode, ErrorCode.ILLEGAL_OPCODE) and len(seen[1]) == 3
