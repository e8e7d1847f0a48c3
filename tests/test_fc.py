# amaranth: UnusedElaboratable=no
"""FcUnit against the golden model's ``_fc``: random shapes, lane splitting, back-pressure, cycle counts."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from helpers import transfer

from dlproc.processor.buffers import OnChipBuffers, entries_from_bytes
from dlproc.processor.config import ProcessorConfig
from dlproc.processor.fc import FcUnit
from dlproc.processor.isa import INSTRUCTION_BITS, InstructionSet, Opcode
from dlproc.sim.golden import GoldenModel, RunResult

DDR_BYTES = 1 << 14


def fc_config(ci: int, co: int, fc_threads: int, axi: int) -> ProcessorConfig:
    """A tiny processor with the given lanes and bus width (32 accumulators)."""
    return ProcessorConfig(dtype="int8", conv_ic_lanes=ci, conv_oc_lanes=co, fc_threads=fc_threads,
                           axi_data_width=axi, input_buffer_kib=1, weight_buffer_kib=1, acc_buffer_entries=32,
                           param_buffer_entries=2)


class FcHarness(wiring.Component):
    """An FcUnit with the input and accumulator buffers, initialised from a golden model."""

    def __init__(self, config: ProcessorConfig, golden: GoldenModel):
        self.config = config
        self.init = {"input": entries_from_bytes(golden.inp_bytes, config.input_entry_bytes),
                     "acc": entries_from_bytes(golden.acc, config.acc_entry_bytes)}
        self.buffers: OnChipBuffers | None = None
        super().__init__({
            "cmd": In(stream.Signature(INSTRUCTION_BITS)),
            "weights": In(stream.Signature(config.axi_data_width)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fc = fc = FcUnit(config=self.config)
        self.buffers = bufs = OnChipBuffers(self.config, init=self.init)
        for name, mem in bufs.memories().items():   # the unused ones too, as the top level does
            m.submodules[name] = mem
        wiring.connect(m, fc.inp_rd, bufs.input.read_port())
        wiring.connect(m, fc.acc_rd, bufs.acc.read_port())
        wiring.connect(m, fc.acc_wr, bufs.acc.write_port(granularity=bufs.geometry["acc"].write_granularity))
        wiring.connect(m, wiring.flipped(self.cmd), fc.cmd)
        wiring.connect(m, wiring.flipped(self.weights), fc.weights)
        m.d.comb += self.busy.eq(fc.busy)
        return m


def random_fc(cfg: ProcessorConfig, rng: np.random.Generator) -> dict[str, int]:
    """Fields of a legal random FC whose weight rows lie in the first DDR_BYTES bytes."""
    n_in = int(rng.integers(1, 4))
    n_out = int(rng.integers(1, 3 * cfg.conv_oc_lanes))
    row = n_in * cfg.conv_ic_lanes
    row_stride = row + cfg.beat_bytes * int(rng.integers(0, 3))
    acc_entries = (n_out - 1) // cfg.conv_oc_lanes + 1
    ddr_addr = cfg.beat_bytes * int(rng.integers(0, (DDR_BYTES - n_out * row_stride) // cfg.beat_bytes))
    return dict(accumulate=int(rng.integers(0, 2)), ddr_addr=ddr_addr, row_stride=row_stride, n_out=n_out,
                n_in=n_in, inp_base=int(rng.integers(0, cfg.input_entries - n_in + 1)),
                acc_base=int(rng.integers(0, cfg.acc_buffer_entries - acc_entries + 1)))


def weight_beats(cfg: ProcessorConfig, ddr: np.ndarray, f: dict[str, int]) -> list[int]:
    """The beats the DMA engine pushes for one FC: the rows in order, each split into little-endian beats."""
    row = f["n_in"] * cfg.conv_ic_lanes
    beats = []
    for o in range(f["n_out"]):
        src = f["ddr_addr"] + o * f["row_stride"]
        raw = ddr[src:src + row].tobytes()
        beats += [int.from_bytes(raw[i:i + cfg.beat_bytes], "little") for i in range(0, row, cfg.beat_bytes)]
    return beats


def run_fc(cfg: ProcessorConfig, seed: int, count: int, *, gap_probability: float) -> list[tuple[int, int]]:
    """Run ``count`` random FCs; compare the accumulators after each. Returns (expected, measured) cycles."""
    rng = np.random.default_rng(seed)
    isa = InstructionSet(cfg)
    golden = GoldenModel(cfg)
    golden.inp_bytes[:] = rng.integers(0, 256, golden.inp_bytes.size)
    golden.acc[:] = rng.integers(-(1 << 31), 1 << 31, golden.acc.shape)
    ddr = rng.integers(0, 256, DDR_BYTES).astype(np.uint8)
    instructions = [random_fc(cfg, rng) for _ in range(count)]
    beats = [b for f in instructions for b in weight_beats(cfg, ddr, f)]
    gaps = rng.random(len(beats)) < gap_probability
    dut = FcHarness(cfg, golden)
    unit = FcUnit(config=cfg)   # for the cycle formula
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    cycles = []
    co = cfg.conv_oc_lanes

    async def feeder(ctx):
        for index, word in enumerate(beats):
            if gaps[index]:
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
            cycles.append((unit.cycles(f["n_out"], f["n_in"]), busy + 1))
            ins = isa.decode(isa.encode(Opcode.FC, **f))
            golden.execute(ins, ddr, DDR_BYTES, RunResult())
            acc = np.array([np.frombuffer(ctx.get(bufs.acc.data[e]).to_bytes(4 * co, "little"), "<i4")
                            for e in range(cfg.acc_buffer_entries)])
            np.testing.assert_array_equal(acc, golden.acc, err_msg=f"accumulators after FC {index}: {ins}")

    sim.add_testbench(feeder, background=True)
    sim.add_testbench(control)
    sim.run()
    assert len(cycles) == count
    return cycles


@pytest.mark.parametrize("ci, co, threads, axi", [
    (4, 8, 4, 32),    # P = 4: one piece per beat and per input entry
    (8, 8, 2, 64),    # P = 2: four pieces per beat, four per entry
    (8, 8, 8, 32),    # P = 4 (the 32-bit beat limits the 8 threads): two beats per entry
    (8, 16, 4, 64),   # P = 4: two pieces per beat, two per entry
])
def test_fc_matches_golden_with_backpressure(ci, co, threads, axi):
    cfg = fc_config(ci, co, threads, axi)
    run_fc(cfg, seed=ci * 100 + co + threads + axi, count=6, gap_probability=0.3)


def test_fc_cycles_with_a_full_weight_stream():
    cfg = fc_config(8, 8, 2, 64)
    cycles = run_fc(cfg, seed=3, count=4, gap_probability=0.0)
    for expected, measured in cycles:
        assert measured == expected
    print(f"\nFC cycles handshake to handshake (expected, measured): {cycles}")


def test_fc_validates_config():
    assert FcUnit(config=ProcessorConfig.preset("tiny_fp32")).lanes == 2   # binary32 fc unit: tests/test_fp32.py
    with pytest.raises(TypeError, match="ProcessorConfig"):
        FcUnit(config="tiny_int8")
    assert FcUnit(config=fc_config(8, 8, 8, 32)).lanes == 4
