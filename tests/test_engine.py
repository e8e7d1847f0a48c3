# amaranth: UnusedElaboratable=no
"""ComputeEngine (GEMM, POST) against the golden model, step for step: buffers, hazards, cycle counts."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from helpers import transfer

from dlproc.processor.buffers import OnChipBuffers, entries_from_bytes
from dlproc.processor.config import ProcessorConfig
from dlproc.processor.engine import AccumulatorUpdateInt32, ComputeEngine, DotProductInt8, MacArray
from dlproc.processor.isa import INSTRUCTION_BITS, GemmMode, InstructionSet, Opcode
from dlproc.processor.rules import gemm_modes
from dlproc.sim.golden import GoldenModel, RunResult


def small_config(**changes) -> ProcessorConfig:
    """A tiny processor: 4 x 8 lanes, 256 input entries, 32 weight entries, 32 accumulators, 4 params."""
    base = dict(dtype="int8", conv_ic_lanes=4, conv_oc_lanes=8, fc_threads=4, axi_data_width=32,
                input_buffer_kib=1, weight_buffer_kib=1, acc_buffer_entries=32, param_buffer_entries=4)
    base.update(changes)
    return ProcessorConfig(**base)


class EngineHarness(wiring.Component):
    """A ComputeEngine with its five buffers, initialised from a golden model's state."""

    cmd: In(stream.Signature(INSTRUCTION_BITS))
    busy: Out(1)
    mac_active: Out(1)

    def __init__(self, config: ProcessorConfig, golden: GoldenModel, *, transparent_acc: bool = False):
        self.config = config
        self.transparent_acc = transparent_acc
        c = config
        self.init = {
            "input": entries_from_bytes(golden.inp_bytes, c.input_entry_bytes),
            "weight": entries_from_bytes(golden.wgt_bytes, c.weight_entry_bytes),
            "param": entries_from_bytes(golden.par_bytes, c.param_entry_bytes),
            "acc": entries_from_bytes(golden.acc, c.acc_entry_bytes),
            "output": entries_from_bytes(golden.out, c.output_entry_bytes),
        }
        self.buffers: OnChipBuffers | None = None
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = ComputeEngine(config=self.config)
        self.buffers = bufs = OnChipBuffers(self.config, init=self.init)
        for name, mem in bufs.memories().items():
            m.submodules[name] = mem
        acc_wr = bufs.acc.write_port(granularity=bufs.geometry["acc"].write_granularity)
        acc_rd = bufs.acc.read_port(transparent_for=(acc_wr,) if self.transparent_acc else ())
        wiring.connect(m, engine.inp_rd, bufs.input.read_port())
        wiring.connect(m, engine.wgt_rd, bufs.weight.read_port())
        wiring.connect(m, engine.par_rd, bufs.param.read_port())
        wiring.connect(m, engine.acc_rd, acc_rd)
        wiring.connect(m, engine.acc_wr, acc_wr)
        wiring.connect(m, engine.out_wr, bufs.output.write_port())
        wiring.connect(m, wiring.flipped(self.cmd), engine.cmd)
        m.d.comb += [self.busy.eq(engine.busy), self.mac_active.eq(engine.mac_active)]
        return m


def random_golden(cfg: ProcessorConfig, rng: np.random.Generator) -> GoldenModel:
    """A golden model with random buffer contents (parameters with moderate shifts so outputs vary)."""
    g = GoldenModel(cfg)
    g.inp_bytes[:] = rng.integers(0, 256, g.inp_bytes.size)
    g.wgt_bytes[:] = rng.integers(0, 256, g.wgt_bytes.size)
    g.acc[:] = rng.integers(-(1 << 31), 1 << 31, g.acc.shape)
    small = rng.random(g.acc.shape) < 0.5
    g.acc[small] = rng.integers(-20000, 20000, small.sum())
    g.out[:] = rng.integers(-128, 128, g.out.shape)
    co = cfg.conv_oc_lanes
    n = cfg.param_buffer_entries
    g.par[:, 0] = rng.integers(-(1 << 31), 1 << 31, (n, co)).astype(np.int64) & 0xFFFFFFFF
    g.par[:, 0] = np.where(rng.random((n, co)) < 0.7, rng.integers(-3000, 3000, (n, co)) & 0xFFFFFFFF, g.par[:, 0])
    g.par[:, 1] = rng.integers(0, 1 << 32, (n, co))
    g.par[:, 2] = rng.integers(0, 1 << 32, (n, co))
    shift = rng.integers(8, 30, (n, co))
    lo = rng.integers(-128, 0, (n, co)) & 0xFF
    hi = rng.integers(0, 128, (n, co))
    g.par[:, 3] = shift | (lo << 8) | (hi << 16)
    return g


def random_gemm(cfg: ProcessorConfig, rng: np.random.Generator, *, spatial: tuple[int, int] | None = None,
                mode: GemmMode | None = None, max_extent: int = 3) -> dict[str, int]:
    """Fields of a legal random GEMM."""
    r = [int(x) for x in rng.integers(1, max_extent + 1, 3)]
    s = list(spatial) if spatial else [int(x) for x in rng.integers(1, max_extent + 2, 2)]
    R, S = r[0] * r[1] * r[2], s[0] * s[1]
    while R > cfg.weight_entries:
        r = [max(1, x - 1) for x in r]
        R = r[0] * r[1] * r[2]
    strides = [int(x) for x in rng.integers(0, 6, 5)]
    extents = r + s
    span = sum((n - 1) * st for n, st in zip(extents, strides, strict=True))
    assert span < cfg.input_entries
    f = dict(
        mode=int(mode if mode is not None else rng.integers(0, 3)), overwrite=int(rng.integers(0, 2)),
        finalize=int(rng.integers(0, 2)), inp_base=int(rng.integers(0, cfg.input_entries - span)),
        wgt_base=int(rng.integers(0, cfg.weight_entries - R + 1)),
        acc_base=int(rng.integers(0, cfg.acc_buffer_entries - S + 1)),
        out_base=int(rng.integers(0, cfg.acc_buffer_entries - S + 1)),
        param_addr=int(rng.integers(0, cfg.param_buffer_entries)), imm=int(rng.integers(-(1 << 15), 1 << 15)),
    )
    for name, value in zip(("r0", "r1", "r2", "s0", "s1", "ri0", "ri1", "ri2", "si0", "si1"), extents + strides,
                           strict=True):
        f[name] = value
    return f


def random_post(cfg: ProcessorConfig, rng: np.random.Generator) -> dict[str, int]:
    """Fields of a legal random POST."""
    inc = int(rng.integers(0, 2))
    n = int(rng.integers(1, (cfg.param_buffer_entries if inc else cfg.acc_buffer_entries) + 1))
    return dict(n=n, acc_base=int(rng.integers(0, cfg.acc_buffer_entries - n + 1)),
                out_base=int(rng.integers(0, cfg.acc_buffer_entries - n + 1)), param_inc=inc,
                param_addr=int(rng.integers(0, cfg.param_buffer_entries - (n if inc else 1) + 1)))


def run_and_compare(cfg: ProcessorConfig, golden: GoldenModel, words: list[int], *,
                    transparent_acc: bool = False) -> list[tuple[int, bool, int, int]]:
    """Run instructions on the engine and the golden model; compare all acc/out entries after each one.

    Returns ``(steps, writes outputs, busy cycles, mac_active cycles)`` per instruction.
    """
    isa = InstructionSet(cfg)
    dut = EngineHarness(cfg, golden, transparent_acc=transparent_acc)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    stats = []
    co = cfg.conv_oc_lanes

    async def bench(ctx):
        bufs = dut.buffers
        for index, word in enumerate(words):
            ins = isa.decode(word)
            ctx.set(dut.cmd.payload, word)
            ctx.set(dut.cmd.valid, 1)
            await transfer(ctx, dut.cmd)
            ctx.set(dut.cmd.valid, 0)
            busy_cycles = mac_cycles = 0
            while ctx.get(dut.busy):
                busy_cycles += 1
                mac_cycles += ctx.get(dut.mac_active)
                await ctx.tick()
                assert busy_cycles < 10000, "engine hangs"
            result = RunResult()
            if ins.opcode == Opcode.GEMM:
                golden.execute(ins, np.zeros(0, np.uint8), 0, result)
                steps = ins.r0 * ins.r1 * ins.r2 * ins.s0 * ins.s1
                outputs = bool(ins.finalize)
            else:
                golden.execute(ins, np.zeros(0, np.uint8), 0, result)
                steps, outputs = ins.n, True
            assert mac_cycles == result.mac_steps, f"instruction {index} ({ins}): MAC_BUSY cycles"
            stats.append((steps, outputs, busy_cycles, mac_cycles))
            acc = np.array([[int.from_bytes(ctx.get(bufs.acc.data[e]).to_bytes(4 * co, "little")[4 * c:4 * c + 4],
                                            "little", signed=True) for c in range(co)]
                            for e in range(cfg.acc_buffer_entries)], np.int64)
            out = np.array([np.frombuffer(ctx.get(bufs.output.data[e]).to_bytes(co, "little"), np.int8)
                            for e in range(cfg.acc_buffer_entries)])
            np.testing.assert_array_equal(acc, golden.acc, err_msg=f"accumulators after instruction {index}: {ins}")
            np.testing.assert_array_equal(out, golden.out, err_msg=f"outputs after instruction {index}: {ins}")

    sim.add_testbench(bench)
    sim.run()
    return stats


def check_cycles(stats: list[tuple[int, bool, int, int]]) -> None:
    for steps, outputs, busy, _ in stats:
        # Handshake-to-handshake: one cycle of handshake plus the busy cycles.
        assert busy + 1 == ComputeEngine.cycles(steps, writes_outputs=outputs), f"{steps} steps took {busy + 1} cycles"


@pytest.mark.parametrize("seed", [11, 12])
def test_random_gemm_and_post(seed):
    cfg = small_config()
    rng = np.random.default_rng(seed)
    golden = random_golden(cfg, rng)
    isa = InstructionSet(cfg)
    words = []
    for k in range(24):
        if k % 6 == 5:
            words.append(isa.encode(Opcode.POST, **random_post(cfg, rng)))
        else:
            spatial = [(1, 1), (1, 2), (2, 1), None, None][k % 5]
            words.append(isa.encode(Opcode.GEMM, **random_gemm(cfg, rng, spatial=spatial)))
    stats = run_and_compare(cfg, golden, words)
    check_cycles(stats)


@pytest.mark.parametrize("transparent_acc", [False, True])
@pytest.mark.parametrize("mode", gemm_modes(small_config()))  # the modes this processor has
def test_accumulator_hazards(mode, transparent_acc):
    """Back-to-back steps on the same accumulator (S = 1, 2, 3) at full throughput, all modes."""
    cfg = small_config()
    rng = np.random.default_rng(100 + int(mode))
    golden = random_golden(cfg, rng)
    isa = InstructionSet(cfg)
    words = []
    for spatial in ((1, 1), (1, 2), (3, 1), (1, 1)):
        f = random_gemm(cfg, rng, spatial=spatial, mode=mode)
        f.update(r0=3, r1=2, r2=2, finalize=1, overwrite=int(spatial == (1, 2)), wgt_base=0)
        f["inp_base"] = 0
        words.append(isa.encode(Opcode.GEMM, **f))
    stats = run_and_compare(cfg, golden, words, transparent_acc=transparent_acc)
    check_cycles(stats)


def test_gemm_throughput_one_step_per_cycle():
    """A larger MAC GEMM: cycles = R*S + 9 (with finalize), one step per cycle."""
    cfg = small_config()
    rng = np.random.default_rng(7)
    golden = random_golden(cfg, rng)
    isa = InstructionSet(cfg)
    f = random_gemm(cfg, rng, spatial=(4, 6), mode=GemmMode.MAC)
    f.update(r0=3, r1=3, r2=2, ri0=1, ri1=2, ri2=3, si0=4, si1=1, inp_base=0, wgt_base=0, acc_base=4, out_base=0,
             overwrite=1, finalize=1)
    stats = run_and_compare(cfg, golden, [isa.encode(Opcode.GEMM, **f)])
    steps, _, busy, macs = stats[0]
    assert steps == 18 * 24 and macs == steps
    print(f"\nfinalize GEMM, R*S = {steps} steps: {busy + 1} cycles handshake to handshake (R*S + {busy + 1 - steps})")
    check_cycles(stats)


def test_oc_equals_ic_lanes():
    """conv_oc_lanes == conv_ic_lanes: the MAX/SUM lanes cover every output lane."""
    cfg = small_config(conv_oc_lanes=4)
    rng = np.random.default_rng(5)
    golden = random_golden(cfg, rng)
    isa = InstructionSet(cfg)
    words = [isa.encode(Opcode.GEMM, **random_gemm(cfg, rng, mode=GemmMode(k % 3))) for k in range(6)]
    words.append(isa.encode(Opcode.POST, **random_post(cfg, rng)))
    check_cycles(run_and_compare(cfg, golden, words))


def test_components_validate_parameters():
    with pytest.raises(TypeError, match="Lanes must be"):
        DotProductInt8(lanes=0)
    fp32 = ComputeEngine(config=ProcessorConfig.preset("tiny_fp32"))   # the fp32 engine: tests/test_fp32.py
    assert fp32.timing.update > 0 and fp32.timing.reuse_distance == fp32.timing.update + 1
    with pytest.raises(TypeError, match="ProcessorConfig"):
        MacArray(config=None)
    assert AccumulatorUpdateInt32().signature.members["new"].shape.width == 32
