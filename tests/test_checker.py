"""The gateware instruction checker evaluates the legality rules exactly as the golden model does, on random words.

The checker is a pipeline (one word per cycle, verdict ``CHECK_LATENCY`` cycles later, the word and an upstream
fault carried alongside). The rules are written once (``dlproc.processor.rules``); this checks that their Amaranth
evaluation (widths, wrap-around, signedness of the hardware expressions) gives the verdict of their Python-integer
evaluation, which the golden model executes by.
"""

from __future__ import annotations

import random
import zlib

import pytest
from amaranth.sim import Simulator

from dlproc.processor.checker import CHECK_LATENCY, InstructionChecker
from dlproc.processor.config import ProcessorConfig
from dlproc.processor.isa import ErrorCode, InstructionSet, IsaError, Opcode
from dlproc.processor.rules import violation


def golden_verdict(isa: InstructionSet, word: int) -> ErrorCode:
    """Error code the golden model gives a single instruction word (ignoring the DDR window)."""
    try:
        ins = isa.decode(word)
    except IsaError:
        return ErrorCode.ILLEGAL_OPCODE
    return ErrorCode.NONE if violation(ins, isa.config) is None else ErrorCode.ILLEGAL_FIELD


def _field_value(rng: random.Random, width: int, signed: bool, limits: list[int]) -> int:
    """A value biased towards the interesting ones: 0, 1, small, near a buffer limit, or anything."""
    top = (1 << width) - 1
    kind = rng.random()
    if kind < 0.08:
        value = 0
    elif kind < 0.2:
        value = 1
    elif kind < 0.55:
        value = rng.randint(0, min(top, 8))
    elif kind < 0.8 and limits:
        value = max(0, rng.choice(limits) + rng.randint(-2, 2))
    elif kind < 0.9:
        value = rng.randint(0, min(top, 64)) * 4
    else:
        value = rng.randint(0, top)
    value = min(value, top)
    if signed and value >> (width - 1):
        value -= 1 << width
    return value


def _plausible(rng: random.Random, config: ProcessorConfig, op: Opcode) -> dict[str, int]:
    """Fields of an instruction that is probably legal (small extents, aligned addresses)."""
    c = config
    beat = c.beat_bytes
    small = lambda hi: rng.randint(1, hi)  # noqa: E731
    if op == Opcode.LOAD:
        buf = rng.randint(0, 2)
        return dict(buffer=buf, buf_addr=rng.randint(0, 3), ddr_addr=beat * rng.randint(0, 999), len0=beat * small(8),
                    n1=small(4), ddr_stride1=beat * rng.randint(0, 99), n2=small(3), ddr_stride2=beat * small(99))
    if op == Opcode.STORE:
        n2 = small(c.subblocks_per_output)
        return dict(buf_addr=rng.randint(0, 30), ddr_addr=beat * rng.randint(0, 999), n0=small(8), n1=small(4),
                    ddr_stride1=beat * rng.randint(0, 99), buf_stride1=rng.randint(0, 40), n2=n2,
                    ddr_stride2=beat * rng.randint(0, 99), sb0=rng.randint(0, c.subblocks_per_output - n2))
    if op == Opcode.GEMM:
        return dict(mode=rng.randint(0, 2), overwrite=rng.randint(0, 1), finalize=rng.randint(0, 1),
                    acc_base=rng.randint(0, 99), out_base=rng.randint(0, 99), inp_base=rng.randint(0, 99),
                    wgt_base=rng.randint(0, c.weight_entries // 2), param_addr=rng.randint(0, 7),
                    r0=small(3), r1=small(3), r2=small(3), s0=small(5), s1=small(5),
                    ri0=rng.randint(0, 9), ri1=rng.randint(0, 9), ri2=rng.randint(0, 9),
                    si0=rng.randint(0, 9), si1=rng.randint(0, 9), imm=rng.randint(-99, 99))
    if op == Opcode.POST:
        return dict(acc_base=rng.randint(0, 99), out_base=rng.randint(0, 99), n=small(16),
                    param_addr=rng.randint(0, 8), param_inc=rng.randint(0, 1))
    if op == Opcode.FC:
        return dict(accumulate=rng.randint(0, 1), ddr_addr=beat * rng.randint(0, 999),
                    row_stride=beat * rng.randint(0, 99), n_out=small(3 * c.conv_oc_lanes), n_in=small(16),
                    inp_base=rng.randint(0, 99), acc_base=rng.randint(0, c.acc_buffer_entries - 4))
    if op == Opcode.MARK:
        return dict(layer=rng.randint(0, 65535))
    return {}


def random_words(config: ProcessorConfig, count: int, seed: int) -> list[int]:
    """Random instruction words: plausible instructions with a few fields replaced by biased random values."""
    isa = InstructionSet(config)
    rng = random.Random(seed)
    c = config
    limits = [c.input_entries, c.weight_entries, c.acc_buffer_entries, c.param_buffer_entries,
              c.subblocks_per_output, c.beat_bytes, c.input_entries // 2, c.acc_buffer_entries // 2,
              c.conv_oc_lanes, c.input_entry_bytes * 4]
    words = []
    for _ in range(count):
        if rng.random() < 0.05:
            words.append(rng.getrandbits(256))
            continue
        op = rng.choice(list(Opcode))
        fields = _plausible(rng, config, op)
        names = [name for name, _ in isa.layout(op) if name not in ("opcode", "_reserved")]
        for name in rng.sample(names, k=min(len(names), rng.choice([0, 0, 1, 1, 2, len(names)]))):
            shape = isa.layout(op)[name].shape
            fields[name] = _field_value(rng, shape.width, shape.signed, limits)
        word = isa.encode(op, **fields)
        if rng.random() < 0.1:  # reserved bits are ignored
            word |= rng.getrandbits(256) & ~((1 << 200) - 1)
        words.append(word)
    return words


@pytest.mark.parametrize("preset", ["tiny_int8", "small_int8", "zcu102_int8"])
def test_checker_matches_golden(preset):
    config = ProcessorConfig.preset(preset)
    dut = InstructionChecker(config=config)
    isa = InstructionSet(config)
    words = random_words(config, 3000, seed=zlib.crc32(preset.encode()) & 0xFFFF)
    expected = [golden_verdict(isa, w) for w in words]
    # (cycle, word, verdict) of every word leaving the pipeline; one word per cycle in, a gap every 7th cycle,
    # and an upstream fault on every 13th word (it wins over the verdict)
    got: list[tuple[int, int, int]] = []
    sent: list[tuple[int, int]] = []

    async def bench(ctx):
        cycle, i = 0, 0
        while i < len(words) or len(got) < len(words):
            if i < len(words) and cycle % 7 != 6:
                fault = ErrorCode.AXI_READ_ERROR if i % 13 == 12 else ErrorCode.NONE
                ctx.set(dut.valid, 1), ctx.set(dut.word, words[i]), ctx.set(dut.fault, fault)
                sent.append((cycle, i))
                i += 1
            else:
                ctx.set(dut.valid, 0), ctx.set(dut.word, 0), ctx.set(dut.fault, 0)
            if ctx.get(dut.out_valid):
                got.append((cycle, ctx.get(dut.out_word), ctx.get(dut.out_fault)))
            await ctx.tick()
            cycle += 1
            assert cycle < 2 * len(words) + 100

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()

    assert [c for c, _ in sent] == [c - CHECK_LATENCY for c, _, _ in got]
    for (_, i), (_, out_word, error) in zip(sent, got, strict=True):
        word, exp = words[i], expected[i]
        if i % 13 == 12:
            exp = ErrorCode.AXI_READ_ERROR
        assert (out_word, ErrorCode(error)) == (word, exp), (
            f"{preset}: {isa.disassemble([word])} golden {exp.name}, checker {ErrorCode(error).name}")
    # The generator must exercise both outcomes of every executable opcode.
    for op in (Opcode.LOAD, Opcode.STORE, Opcode.GEMM, Opcode.POST, Opcode.FC):
        verdicts = {exp for w, exp in zip(words, expected, strict=True) if w & 0xF == op}
        assert verdicts == {ErrorCode.NONE, ErrorCode.ILLEGAL_FIELD}, (op.name, verdicts)
    assert ErrorCode.ILLEGAL_OPCODE in expected
