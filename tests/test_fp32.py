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

from dlproc.processor.config import ProcessorConfig
from dlproc.processor.engine import ComputeEngine
from dlproc.processor.fc import FcUnit
from dlproc.processor.fp32 import CANONICAL_NAN, FpAdd, FpMul, f32_from_int16, f32_max
from dlproc.processor.isa import GemmMode, InstructionSet, Opcode
from dlproc.sim.golden import GoldenModel, RunResult, f32_add, f32_mul, f32_sanitize
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


# ------------------------------------------------------------------------------------------------ compute engine
def fp32_config(**changes) -> ProcessorConfig:
    """A small fp32 processor: 2 x 4 lanes, 128 input entries, 16 weight entries, 32 accumulators, 4 params."""
    base = dict(dtype="fp32", conv_ic_lanes=2, conv_oc_lanes=4, fc_threads=2, axi_data_width=64,
                input_buffer_kib=1, weight_buffer_kib=1, acc_buffer_entries=32, param_buffer_entries=4)
    base.update(changes)
    return ProcessorConfig(**base)


def random_words(rng: np.random.Generator, shape, *, special: float = 0.03) -> np.ndarray:
    """binary32 words: normal values of mixed magnitudes, some zeros, and edge cases (NaN, inf, subnormals)."""
    x = (rng.standard_normal(shape) * 2.0 ** rng.integers(-6, 7, shape)).astype(np.float32)
    words = x.view(np.uint32).copy()
    words[rng.random(shape) < 0.05] = 0
    edge = rng.random(shape) < special
    words[edge] = rng.choice(EDGE, edge.sum())
    return words


def random_fp32_golden(cfg: ProcessorConfig, rng: np.random.Generator) -> GoldenModel:
    """A golden model with random binary32 buffer contents and parameters (clamp pairs mostly ordered)."""
    g = GoldenModel(cfg)
    g.inp_bytes.view(np.uint32)[:] = random_words(rng, g.inp_bytes.size // 4)
    g.wgt_bytes.view(np.uint32)[:] = random_words(rng, g.wgt_bytes.size // 4)
    g.acc.view(np.uint32)[:] = random_words(rng, g.acc.shape)
    g.out.view(np.uint32)[:] = random_words(rng, g.out.shape)
    n, co = cfg.param_buffer_entries, cfg.conv_oc_lanes
    g.par[:, 0] = random_words(rng, (n, co))
    g.par[:, 1] = bits(rng.uniform(0.25, 2.0, (n, co)))
    g.par[:, 2] = np.where(rng.random((n, co)) < 0.5, bits(rng.uniform(-1, 1, (n, co))), 0)
    bound = rng.uniform(0.5, 8.0, (n, co // 2)).astype(np.float32)
    lo = np.where(rng.random(bound.shape) < 0.3, -np.inf, -bound).astype(np.float32)
    hi = np.where(rng.random(bound.shape) < 0.3, np.inf, bound).astype(np.float32)
    swap = rng.random(bound.shape) < 0.1
    lo[swap], hi[swap] = hi[swap], lo[swap]
    clamp = np.empty((n, co), np.float32)
    clamp[:, 0::2], clamp[:, 1::2] = lo, hi
    g.par[:, 3] = bits(clamp)
    return g


def run_engine_fp32(cfg: ProcessorConfig, golden: GoldenModel, words: list[int], *,
                    transparent_acc: bool = False) -> list[tuple[int, int, bool, int]]:
    """Run instructions on the engine and the golden model; compare every acc/out word after each one.

    Returns ``(steps, spatial, writes outputs, busy cycles)`` per instruction.
    """
    from helpers import transfer
    from test_engine import EngineHarness

    isa = InstructionSet(cfg)
    dut = EngineHarness(cfg, golden, transparent_acc=transparent_acc)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    stats = []
    co = cfg.conv_oc_lanes

    def words_of(memory, entries):
        return np.array([np.frombuffer(ctx_get(memory.data[e]).to_bytes(4 * co, "little"), np.uint32)
                         for e in range(entries)])

    async def bench(ctx):
        nonlocal ctx_get
        ctx_get = ctx.get
        bufs = dut.buffers
        for index, word in enumerate(words):
            ins = isa.decode(word)
            ctx.set(dut.cmd.payload, word)
            ctx.set(dut.cmd.valid, 1)
            await transfer(ctx, dut.cmd)
            ctx.set(dut.cmd.valid, 0)
            busy = mac = 0
            while ctx.get(dut.busy):
                busy += 1
                mac += ctx.get(dut.mac_active)
                await ctx.tick()
                assert busy < 20000, "engine hangs"
            result = RunResult()
            if ins.opcode == Opcode.GEMM:
                golden.execute(ins, np.zeros(0, np.uint8), 0, result)
                steps, spatial, outputs = ins.r0 * ins.r1 * ins.r2 * ins.s0 * ins.s1, ins.s0 * ins.s1, ins.finalize
            else:
                golden.execute(ins, np.zeros(0, np.uint8), 0, result)
                steps, spatial, outputs = ins.n, ins.n, True
            assert mac == result.mac_steps, f"instruction {index}: MAC_BUSY cycles"
            stats.append((steps, spatial, bool(outputs), busy))
            acc = words_of(bufs.acc, cfg.acc_buffer_entries)
            out = words_of(bufs.output, cfg.acc_buffer_entries)
            np.testing.assert_array_equal(acc, golden.acc.view(np.uint32), err_msg=f"acc after {index}: {ins}")
            np.testing.assert_array_equal(out, golden.out.view(np.uint32), err_msg=f"out after {index}: {ins}")

    ctx_get = None
    sim.add_testbench(bench)
    sim.run()
    return stats


def check_engine_cycles(cfg: ProcessorConfig, stats) -> None:
    timing = ComputeEngine.timing_of(cfg)
    for steps, spatial, outputs, busy in stats:
        want = timing.cycles(steps, writes_outputs=outputs, spatial=spatial)
        assert busy + 1 == want, f"{steps} steps ({spatial} spatial) took {busy + 1} cycles, not {want}"


@pytest.mark.parametrize("seed", [21, 22])
def test_engine_random_gemm_and_post(seed):
    """Random GEMM (all modes, spatial extents 1 to 16) and POST instructions: every accumulator and output word."""
    from test_engine import random_gemm, random_post

    cfg = fp32_config()
    rng = np.random.default_rng(seed)
    golden = random_fp32_golden(cfg, rng)
    isa = InstructionSet(cfg)
    words = []
    for k in range(14):
        if k % 5 == 4:
            words.append(isa.encode(Opcode.POST, **random_post(cfg, rng)))
        else:
            spatial = [(1, 1), (1, 2), (2, 3), None][k % 4]
            words.append(isa.encode(Opcode.GEMM, **random_gemm(cfg, rng, spatial=spatial)))
    check_engine_cycles(cfg, run_engine_fp32(cfg, golden, words))


@pytest.mark.parametrize("transparent_acc", [False, True])
def test_engine_accumulator_reuse(transparent_acc):
    """Spatial extents 1 to 7 around the update latency: the engine waits just enough and forwards correctly."""
    from test_engine import random_gemm

    cfg = fp32_config()
    rng = np.random.default_rng(30 + transparent_acc)
    golden = random_fp32_golden(cfg, rng)
    isa = InstructionSet(cfg)
    words = []
    for k, spatial in enumerate(((1, 1), (1, 2), (1, 3), (2, 2), (1, 5), (2, 3), (1, 7))):
        f = random_gemm(cfg, rng, spatial=spatial, mode=GemmMode(k % 3))
        f.update(r0=2, r1=2, r2=1, finalize=1, overwrite=k % 2, wgt_base=0, inp_base=0)
        words.append(isa.encode(Opcode.GEMM, **f))
    check_engine_cycles(cfg, run_engine_fp32(cfg, golden, words, transparent_acc=transparent_acc))


def test_engine_four_input_lanes():
    """conv_ic_lanes = 4 (a two-level adder tree), conv_oc_lanes = 4 (MAX/SUM lanes cover every output lane)."""
    from test_engine import random_gemm

    cfg = fp32_config(conv_ic_lanes=4, fc_threads=4, axi_data_width=128, input_buffer_kib=2, weight_buffer_kib=2)
    rng = np.random.default_rng(40)
    golden = random_fp32_golden(cfg, rng)
    isa = InstructionSet(cfg)
    words = [isa.encode(Opcode.GEMM, **random_gemm(cfg, rng, mode=GemmMode(k % 3))) for k in range(6)]
    check_engine_cycles(cfg, run_engine_fp32(cfg, golden, words))


# ------------------------------------------------------------------------------------------------ fc unit
def run_fc_fp32(cfg: ProcessorConfig, seed: int, count: int, *, gap_probability: float,
                max_in: int = 4) -> list[tuple[int, int]]:
    """Random FC instructions on the fp32 fc unit with a stalling weight stream; every accumulator word is compared
    with the golden model after each. Returns ``(formula, measured)`` cycles for the instructions without stalls."""
    from helpers import transfer
    from test_fc import FcHarness

    rng = np.random.default_rng(seed)
    isa = InstructionSet(cfg)
    golden = GoldenModel(cfg)
    golden.inp_bytes.view(np.uint32)[:] = random_words(rng, golden.inp_bytes.size // 4, special=0.01)
    golden.acc.view(np.uint32)[:] = random_words(rng, golden.acc.shape)
    ddr_bytes = 1 << 14
    ddr = random_words(rng, ddr_bytes // 4, special=0.002).view(np.uint8)
    co, beat = cfg.conv_oc_lanes, cfg.beat_bytes
    instructions = []
    for _ in range(count):
        n_in, n_out = int(rng.integers(1, max_in + 1)), int(rng.integers(1, 3 * co))
        row = n_in * cfg.input_entry_bytes
        row_stride = row + beat * int(rng.integers(0, 3))
        entries = (n_out - 1) // co + 1
        instructions.append(dict(
            accumulate=int(rng.integers(0, 2)), row_stride=row_stride, n_out=n_out, n_in=n_in,
            ddr_addr=beat * int(rng.integers(0, (ddr_bytes - n_out * row_stride) // beat)),
            inp_base=int(rng.integers(0, cfg.input_entries - n_in + 1)),
            acc_base=int(rng.integers(0, cfg.acc_buffer_entries - entries + 1))))
    beats, owner = [], []
    for index, f in enumerate(instructions):
        row = f["n_in"] * cfg.input_entry_bytes
        for o in range(f["n_out"]):
            raw = ddr[f["ddr_addr"] + o * f["row_stride"]:][:row].tobytes()
            beats += [int.from_bytes(raw[i:i + beat], "little") for i in range(0, row, beat)]
            owner += [index] * (row // beat)
    stalled = {owner[i] for i in np.flatnonzero(rng.random(len(beats)) < gap_probability)}
    dut = FcHarness(cfg, golden)
    unit = FcUnit(config=cfg)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    cycles = []

    async def feeder(ctx):
        for index, word in enumerate(beats):
            if owner[index] in stalled and rng.random() < 0.5:
                ctx.set(dut.weights.valid, 0)
                for _ in range(int(rng.integers(1, 4))):
                    await ctx.tick()
            ctx.set(dut.weights.payload, word)
            ctx.set(dut.weights.valid, 1)
            await transfer(ctx, dut.weights)
        ctx.set(dut.weights.valid, 0)

    async def control(ctx):
        bufs = dut.buffers
        for index, f in enumerate(instructions):
            ctx.set(dut.cmd.payload, isa.encode(Opcode.FC, **f))
            ctx.set(dut.cmd.valid, 1)
            await transfer(ctx, dut.cmd)
            ctx.set(dut.cmd.valid, 0)
            busy = 0
            while ctx.get(dut.busy):
                busy += 1
                await ctx.tick()
                assert busy < 20000, "fc unit hangs"
            if index not in stalled:
                cycles.append((unit.cycles(f["n_out"], f["n_in"]), busy + 1))
            ins = isa.decode(isa.encode(Opcode.FC, **f))
            golden.execute(ins, ddr, ddr_bytes, RunResult())
            acc = np.array([np.frombuffer(ctx.get(bufs.acc.data[e]).to_bytes(4 * co, "little"), np.uint32)
                            for e in range(cfg.acc_buffer_entries)])
            np.testing.assert_array_equal(acc, golden.acc.view(np.uint32), err_msg=f"acc after FC {index}: {ins}")

    sim.add_testbench(feeder, background=True)
    sim.add_testbench(control)
    sim.run()
    return cycles


@pytest.mark.parametrize("ci,co,threads,axi", [(2, 4, 2, 64), (4, 4, 4, 128), (4, 8, 2, 128), (2, 2, 1, 32)])
def test_fc_unit_matches_golden(ci, co, threads, axi):
    """Rows of 1 to 4 pieces up to many, fewer and more pieces than partial sums, stalls in the weight stream;
    one piece per cycle when the stream keeps up."""
    cfg = fp32_config(conv_ic_lanes=ci, conv_oc_lanes=co, fc_threads=threads, axi_data_width=axi)
    cycles = run_fc_fp32(cfg, seed=ci * 100 + co * 10 + threads, count=8, gap_probability=0.05)
    assert cycles and all(want == got for want, got in cycles), cycles


def test_fc_unit_long_rows():
    """Rows much longer than the ring: every partial sum sees many pieces."""
    cfg = fp32_config(input_buffer_kib=2)
    run_fc_fp32(cfg, seed=5, count=3, gap_probability=0.02, max_in=40)


# ------------------------------------------------------------------------------------------------ post-processing
def test_postprocessor_matches_golden():
    """PostProcessor (PostLaneFp32 lanes, clamp pairs) against postprocess_fp32: edge-case accumulators and biases,
    multipliers of both signs and zero, clamps with infinities and lo > hi, a stalling input."""
    from dlproc.processor.postproc import PostProcessor
    from dlproc.sim.golden import postprocess_fp32

    cfg = fp32_config()
    co = cfg.conv_oc_lanes
    rng = np.random.default_rng(50)
    n = 120
    acc = random_words(rng, (n, co), special=0.2)
    par = np.zeros((n, 4, co), np.uint32)
    par[:, 0] = random_words(rng, (n, co), special=0.2)
    par[:, 1] = random_words(rng, (n, co), special=0.05)
    par[:, 2] = np.where(rng.random((n, co)) < 0.3, 0, random_words(rng, (n, co), special=0.05))
    bounds = np.sort(rng.standard_normal((n, co // 2, 2)).astype(np.float32) * 4, axis=-1)
    bounds[rng.random((n, co // 2)) < 0.2, 0] = -np.inf
    bounds[rng.random((n, co // 2)) < 0.2, 1] = np.inf
    swap = rng.random((n, co // 2)) < 0.1
    bounds[swap] = bounds[swap][:, ::-1]
    par[:, 3] = bits(bounds.reshape(n, co))
    want = bits(postprocess_fp32(floats(acc), par))
    dut = PostProcessor(config=cfg)
    layout = dut.input_layout
    got = np.zeros((n, co), np.uint32)
    valid = rng.random(4 * n) < 0.7

    async def bench(ctx):
        sent, cycle, pending = 0, 0, []
        while sent < n or pending:
            if sent < n and valid[cycle]:
                raw = (int.from_bytes(acc[sent].astype("<u4").tobytes(), "little") << layout["acc"].offset
                       | int.from_bytes(par[sent].astype("<u4").tobytes(), "little") << layout["params"].offset
                       | (sent % cfg.acc_buffer_entries) << layout["addr"].offset)
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload.as_value(), raw)
                pending.append((cycle + dut.LATENCY, sent))
                sent += 1
            else:
                ctx.set(dut.i.valid, 0)
            await ctx.tick()
            cycle += 1
            if pending and pending[0][0] == cycle:
                _, index = pending.pop(0)
                assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload.addr) == index % cfg.acc_buffer_entries
                got[index] = np.frombuffer(ctx.get(dut.o.payload.data.as_value()).to_bytes(4 * co, "little"),
                                           np.uint32)
            else:
                assert not ctx.get(dut.o.valid)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for i in range(n):
        assert_bits_equal(got[i], want[i], acc[i], par[i, 0], "post")
    # the clamp pairs were exercised: some outputs equal a finite bound
    assert (want == par[:, 3][:, [0, 0, 2, 2]]).any() and (want == par[:, 3][:, [1, 1, 3, 3]]).any()
