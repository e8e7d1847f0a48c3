# amaranth: UnusedElaboratable=no
"""The binary32 units (processor/fp32.py and the fp32 lanes built from them) against numpy, in Amaranth's simulator.

Two yardsticks: the golden model's functions (``f32_add``, ``f32_mul``, ... in ``dlproc.sim.golden``), which must be
matched bit for bit on every input, and plain numpy float32 arithmetic, which they equal wherever flushing
subnormals and canonical NaNs make no difference. Inputs mix uniformly random bit patterns with the edge cases:
signed zeros, infinities, NaNs with payloads, subnormals, the largest and smallest normals, overflow, products and
sums around ``2**-126``, and near-cancellation.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from dlproc.processor.fp32 import CANONICAL_NAN, FpAdd, FpMul, f32_from_int16, f32_max
from dlproc.sim.golden import f32_add, f32_mul, f32_sanitize
from dlproc.sim.golden import f32_max as golden_max

EDGE = np.array([
    0x0000_0000, 0x8000_0000,                     # +-0
    0x7F80_0000, 0xFF80_0000,                     # +-inf
    0x7FC0_0000, 0xFFC0_0001, 0x7F80_0001,        # quiet NaN, negative NaN with payload, signalling NaN
    0x0000_0001, 0x807F_FFFF, 0x0040_0000,        # subnormals
    0x0080_0000, 0x8080_0000, 0x0080_0001,        # smallest normals
    0x7F7F_FFFF, 0xFF7F_FFFF, 0x7F00_0000,        # largest normals, 2**127
    0x3F80_0000, 0xBF80_0000, 0x3F80_0001, 0x3F7F_FFFF, 0x4000_0000, 0x3F00_0000,
    0x1F80_0000, 0x2000_0000,                     # 2**-64, 2**-63 (products near 2**-127)
], np.uint32)


def bits(x) -> np.ndarray:
    return np.asarray(x, np.float32).view(np.uint32)


def floats(b) -> np.ndarray:
    return np.asarray(b, np.uint32).view(np.float32)


def operand_pairs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random pairs plus every pair of edge cases, and the constructed corner cases."""
    a = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    # a third of the pairs with close exponents (exercises alignment, cancellation and rounding of sums)
    close = rng.random(n) < 0.35
    shift = rng.integers(-3, 4, n).astype(np.int64)
    exp_a = (a >> 23) & 0xFF
    exp_b = np.clip(exp_a.astype(np.int64) + shift, 1, 254).astype(np.uint32)
    b = np.where(close, (b & 0x807F_FFFF) | (exp_b << 23), b)
    # near-cancellation: b = -a with a few low bits changed
    cancel = rng.random(n) < 0.1
    b = np.where(cancel, (a ^ 0x8000_0000) ^ rng.integers(0, 16, n).astype(np.uint32), b)
    # products and sums near the smallest normal: exponents summing to about -126
    tiny = rng.random(n) < 0.1
    ea = rng.integers(40, 90, n).astype(np.uint32)
    eb = (254 - 126 - ea + rng.integers(-1, 2, n)).astype(np.uint32)
    a = np.where(tiny, (a & 0x807F_FFFF) | (ea << 23), a)
    b = np.where(tiny, (b & 0x807F_FFFF) | (eb << 23), b)
    ea2, eb2 = np.meshgrid(EDGE, EDGE)
    corner_a = [bits(np.float32(4095 * 2.0 ** -75)), bits(np.float32(18631 * 2.0 ** -75)),
                bits(np.float32(1.5 * 2.0 ** -126)), bits(np.float32(2.0 ** 127))]
    corner_b = [bits(np.float32(4097 * 2.0 ** -75)), bits(np.float32(1801 * 2.0 ** -76)),
                bits(np.float32(-2.0 ** -126)), bits(np.float32(2.0 ** 127))]
    a = np.concatenate([a, ea2.ravel(), np.array(corner_a, np.uint32)])
    b = np.concatenate([b, eb2.ravel(), np.array(corner_b, np.uint32)])
    return a, b


def run_binary(unit, latency: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Stream the operand pairs through a two-input unit, one per cycle; returns the outputs in order."""
    out = np.zeros(len(a), np.uint32)

    async def bench(ctx):
        for i in range(len(a) + latency - 1):
            if i < len(a):
                ctx.set(unit.a, int(a[i]))
                ctx.set(unit.b, int(b[i]))
            await ctx.tick()
            if i >= latency - 1:
                out[i - latency + 1] = ctx.get(unit.y)

    sim = Simulator(unit)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def assert_bits_equal(got: np.ndarray, want: np.ndarray, a: np.ndarray, b: np.ndarray, op: str) -> None:
    bad = np.flatnonzero(got != want)
    if bad.size:
        lines = [f"{a[i]:08x} {op} {b[i]:08x}: got {got[i]:08x} ({floats(got[i])!r}), want {want[i]:08x} "
                 f"({floats(want[i])!r})" for i in bad[:10]]
        raise AssertionError(f"{bad.size} of {len(got)} results differ:\n" + "\n".join(lines))


def numpy_agrees(wide: np.ndarray) -> np.ndarray:
    """Where flushing makes no difference: the float64 result (exact for products) is zero, infinite or at least
    ``2**-126`` in magnitude (plain IEEE rounds values just below ``2**-126`` up to it; the hardware flushes them)."""
    mag = np.abs(wide)
    return (mag >= 2.0 ** -126) | (mag == 0)


@pytest.mark.parametrize("unit_cls,golden,np_op,sym", [(FpAdd, f32_add, np.add, "+"),
                                                       (FpMul, f32_mul, np.multiply, "*")])
def test_operator_matches_golden_and_numpy(unit_cls, golden, np_op, sym):
    rng = np.random.default_rng(1 if sym == "+" else 2)
    a, b = operand_pairs(rng, 3000)
    got = run_binary(unit_cls(), unit_cls.LATENCY, a, b)
    want = bits(golden(floats(a), floats(b)))
    assert_bits_equal(got, want, a, b, sym)
    # plain numpy on flushed operands: identical whenever its result is a normal number, zero or infinity
    fa, fb = f32_sanitize(floats(a)), f32_sanitize(floats(b))
    with np.errstate(all="ignore"):
        exact = bits(np_op(fa, fb))
        wide = np_op(fa.astype(np.float64), fb.astype(np.float64))
    normal = numpy_agrees(wide) & ~np.isnan(floats(exact))
    assert normal.sum() > 0.8 * len(a)
    assert_bits_equal(got[normal], exact[normal], a[normal], b[normal], sym)
    nan = np.isnan(floats(exact))
    assert (got[nan] == CANONICAL_NAN).all()


@pytest.mark.parametrize("x,y,want", [
    (1.0, -1.0, 0x0000_0000),                          # exact cancellation is +0
    (-0.0, -0.0, 0x8000_0000),                         # -0 + -0 = -0
    (0.0, -0.0, 0x0000_0000),
    (np.inf, -np.inf, CANONICAL_NAN),
    (3.0e38, 3.0e38, 0x7F80_0000),                     # overflow
    (-3.0e38, -3.0e38, 0xFF80_0000),
    (1.5 * 2.0 ** -126, -2.0 ** -126, 0x0000_0000),    # subnormal result, flushed, sign of the exact result
    (-1.5 * 2.0 ** -126, 2.0 ** -126, 0x8000_0000),
    (1.0, 2.0 ** -24, 0x3F80_0000),                    # tie, rounds to even (down)
    (1.0 + 2.0 ** -23, 2.0 ** -24, 0x3F80_0002),       # tie, rounds to even (up)
    (1.0, -(2.0 ** -25) - 2.0 ** -48, 0x3F7F_FFFF),    # below a tie: rounds away from 1.0 after the borrow
])
def test_adder_edge_cases(x, y, want):
    got = run_binary(FpAdd(), FpAdd.LATENCY, bits([x]), bits([y]))
    assert got[0] == want, f"{x!r} + {y!r} = {got[0]:08x}, want {want:08x}"
    assert bits(f32_add(np.float32([x]), np.float32([y])))[0] == want


@pytest.mark.parametrize("x,y,want", [
    (0.0, np.inf, CANONICAL_NAN),
    (-0.0, 5.0, 0x8000_0000),
    (-np.inf, -2.0, 0x7F80_0000),
    (2.0 ** 100, 2.0 ** 100, 0x7F80_0000),                       # overflow
    (2.0 ** -100, 2.0 ** -100, 0x0000_0000),                     # underflow to zero
    (4095 * 2.0 ** -75, 4097 * 2.0 ** -75, 0x0000_0000),         # 2**-126 - 2**-150: flushed (IEEE gives 2**-126)
    (18631 * 2.0 ** -75, -1801 * 2.0 ** -76, 0x8080_0000),       # 2**-126 - 2**-151: a tie, rounds up to -2**-126
    (1.0, 2.0 ** -127, 0x0000_0000),                             # subnormal input is zero
])
def test_multiplier_edge_cases(x, y, want):
    got = run_binary(FpMul(), FpMul.LATENCY, bits([x]), bits([y]))
    assert got[0] == want, f"{x!r} * {y!r} = {got[0]:08x}, want {want:08x}"
    assert bits(f32_mul(np.float32([x]), np.float32([y])))[0] == want


def test_max_and_int16_conversion():
    """The combinational helpers: maximum (NaN propagates, -0 < +0) and the SUM-mode immediate conversion."""
    rng = np.random.default_rng(3)
    a, b = operand_pairs(rng, 200)
    m = Module()
    sa, sb, sy = Signal(32), Signal(32), Signal(32)
    imm, fimm = Signal(16), Signal(32)
    m.d.comb += [sy.eq(f32_max(sa, sb)), fimm.eq(f32_from_int16(imm.as_signed()))]
    ints = np.array([0, 1, -1, 2, 3, 255, -32768, 32767, 12345, -7, 1024, -1025], np.int64)
    got_max, got_imm = [], []

    async def bench(ctx):
        for x, y in zip(a, b, strict=True):
            ctx.set(sa, int(x))
            ctx.set(sb, int(y))
            got_max.append(ctx.get(sy))
        for v in ints:
            ctx.set(imm, int(v) & 0xFFFF)
            got_imm.append(ctx.get(fimm))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert_bits_equal(np.array(got_max, np.uint32), bits(golden_max(floats(a), floats(b))), a, b, "max")
    np.testing.assert_array_equal(np.array(got_imm, np.uint32), bits(ints.astype(np.float32)))
    assert bits(golden_max(np.float32([-0.0]), np.float32([0.0])))[0] == 0
    assert bits(golden_max(np.float32([np.nan]), np.float32([1.0])))[0] == CANONICAL_NAN
