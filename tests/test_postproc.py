# amaranth: UnusedElaboratable=no
"""PostProcessor against the golden model's ``postprocess_int8``, including the numeric corner cases."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from dlproc.processor.config import ProcessorConfig
from dlproc.processor.postproc import PostProcessor
from dlproc.sim.golden import postprocess_int8

CFG = ProcessorConfig(dtype="int8", conv_ic_lanes=4, conv_oc_lanes=8, fc_threads=4, axi_data_width=32,
                      input_buffer_kib=1, weight_buffer_kib=1, acc_buffer_entries=16, param_buffer_entries=2)


def _random_case(rng: np.random.Generator, co: int) -> tuple[np.ndarray, np.ndarray]:
    """One accumulator entry (int32) and one parameter entry (uint32, shape (4, co)) with many corner cases."""
    i32 = np.iinfo(np.int32)
    acc = rng.integers(i32.min, i32.max, co, endpoint=True, dtype=np.int64)
    small = rng.random(co) < 0.4
    acc[small] = rng.integers(-3000, 3000, small.sum())
    acc[rng.random(co) < 0.1] = i32.min
    acc[rng.random(co) < 0.1] = i32.max
    bias = rng.integers(i32.min, i32.max, co, endpoint=True, dtype=np.int64)
    mask = rng.random(co) < 0.5
    bias[mask] = rng.integers(-5000, 5000, mask.sum())
    mults = rng.integers(-32768, 32767, (2, co), endpoint=True)
    mults[rng.random((2, co)) < 0.1] = -32768
    shift = rng.integers(0, 64, co)
    mask = rng.random(co) < 0.6
    shift[mask] = rng.integers(0, 49, mask.sum())
    lo = rng.integers(-128, 128, co)
    hi = rng.integers(-128, 128, co)
    swap = (lo > hi) & (rng.random(co) < 0.8)
    lo[swap], hi[swap] = hi[swap], lo[swap]
    junk = rng.integers(0, 1 << 16, (3, co)).astype(np.uint32)  # bits the hardware must ignore
    par = np.zeros((4, co), np.uint32)
    par[0] = (bias & 0xFFFFFFFF).astype(np.uint32)
    par[1] = (mults[0] & 0xFFFF).astype(np.uint32) | (junk[0] << 16)
    par[2] = (mults[1] & 0xFFFF).astype(np.uint32) | (junk[1] << 16)
    par[3] = (shift | (junk[2] & 0xC0) | ((lo & 0xFF) << 8) | ((hi & 0xFF) << 16) | ((junk[2] >> 8) << 24)
              ).astype(np.uint32)
    return acc.astype(np.int32), par


def _pack(acc: np.ndarray, par: np.ndarray, addr: int, layout) -> int:
    acc_bits = int.from_bytes(acc.astype("<i4").tobytes(), "little")
    par_bits = int.from_bytes(par.astype("<u4").tobytes(), "little")
    return ((acc_bits << layout["acc"].offset) | (par_bits << layout["params"].offset)
            | (addr << layout["addr"].offset))


@pytest.mark.parametrize("seed", [1, 2])
def test_postprocessor_matches_golden(seed):
    rng = np.random.default_rng(seed)
    dut = PostProcessor(config=CFG)
    co = CFG.conv_oc_lanes
    n = 150
    cases = [_random_case(rng, co) for _ in range(n)]
    valid_pattern = rng.random(n + dut.LATENCY + 2) < 0.8
    expected = []
    got = []

    async def bench(ctx):
        sent = 0
        cycle = 0
        pending = []  # (cycle the output must appear, address, expected lanes)
        while sent < n or pending:
            if sent < n and valid_pattern[cycle % len(valid_pattern)]:
                acc, par = cases[sent]
                addr = sent % CFG.acc_buffer_entries
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload.as_value(), _pack(acc, par, addr, dut.input_layout))
                want = postprocess_int8(acc, par)
                pending.append((cycle + dut.LATENCY, addr, want))
                expected.append(want)
                sent += 1
            else:
                ctx.set(dut.i.valid, 0)
            await ctx.tick()
            cycle += 1
            o_valid = ctx.get(dut.o.valid)
            if pending and pending[0][0] == cycle:
                _, addr, want = pending.pop(0)
                assert o_valid, f"no output {dut.LATENCY} cycles after the input"
                assert ctx.get(dut.o.payload.addr) == addr
                raw = ctx.get(dut.o.payload.data.as_value())
                lanes = np.frombuffer(raw.to_bytes(co, "little"), np.int8)
                got.append(lanes)
                np.testing.assert_array_equal(lanes, want, err_msg=f"entry {len(got) - 1}")
            else:
                assert not o_valid, "output without an input"
        assert ctx.get(dut.busy), "busy must cover the cycle the last output is presented"
        await ctx.tick()
        assert not ctx.get(dut.busy) and not ctx.get(dut.o.valid)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(got) == n


def test_postprocessor_validates_config():
    # the fp32 lanes are tested in tests/test_fp32.py
    assert PostProcessor(config=ProcessorConfig.preset("tiny_fp32")).LATENCY > PostProcessor(config=CFG).LATENCY
    with pytest.raises(TypeError, match="ProcessorConfig"):
        PostProcessor(config="tiny_int8")
