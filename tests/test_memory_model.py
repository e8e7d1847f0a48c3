"""The memory system model in time (``boards/memory.py``): its conversion to cycles, the Verilator harness honouring
its bandwidth and latency, and the estimate following the RTL under it.

The harness is measured on the stand-in top (``rtl_fixtures/standin_top.py``: copies with INCR bursts, reads and
writes overlapping) cycle by cycle, and on the processor (small_int8) running a network, where its outputs must stay
equal to the golden model and the estimate within 3% of the RTL's own counters.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from nets import ALL_NETS
from test_verilator_harness import check_copy, copy, fill

from dlproc.boards.memory import IDEAL_DDR, ZCU102_DDR, DdrModel, memory_model
from dlproc.processor.config import ProcessorConfig
from dlproc.processor.isa import CTRL_IRQ_EN, CTRL_START, Reg
from dlproc.sim.verilator import VerilatorDevice

ZCU102 = ProcessorConfig.preset("zcu102_int8")


# ---------------------------------------------------------------------------------------------- model in cycles


def test_zcu102_figures_convert_to_cycles_with_the_clock():
    # 19.2 GB/s x 0.75 = 14.4 GB/s; at 250 MHz that is 57.6 B/cycle = 3.6 beats of 16 B; 180 ns = 45 cycles
    t = ZCU102_DDR.timing(ZCU102, clock_mhz=250)
    assert ZCU102_DDR.bandwidth_gbps == pytest.approx(14.4)
    assert (t.read_latency, t.write_latency) == (45, 30)
    assert t.shared_beats_per_cycle == Fraction(36, 10)
    assert t.stream_rate == 1.0  # at 250 MHz one 128-bit port is the limit, not the controller
    # at 1000 MHz: 14.4 B/cycle = 0.9 beat; latency 180 cycles: the controller is the limit
    fast = ZCU102_DDR.timing(ZCU102, clock_mhz=1000)
    assert (fast.read_latency, fast.write_latency) == (180, 120)
    assert fast.shared_beats_per_cycle == Fraction(9, 10) and fast.stream_rate == 0.9


@pytest.mark.parametrize("mhz", [10, 99.9, 123.4, 250, 333.3, 640, 901, 1000])
@pytest.mark.parametrize("beat", [4, 8, 16, 64])
def test_model_never_grants_more_than_the_board(mhz, beat):
    config = ProcessorConfig(conv_ic_lanes=64, conv_oc_lanes=64, fc_threads=16, axi_data_width=8 * beat)
    t = ZCU102_DDR.timing(config, clock_mhz=mhz)
    granted = float(t.shared_beats_per_cycle) * beat * mhz * 1e6
    assert granted <= 14.4e9 * (1 + 1e-12)
    assert granted >= 14.4e9 - beat * mhz * 1e6 / 1000  # rounded down by at most 1/1000 beat per cycle
    assert t.read_latency * 1e3 / mhz >= 180 - 1e-9 and (t.read_latency - 1) * 1e3 / mhz < 180


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown memory model 'ddr5'.*ideal, zcu102"):
        memory_model("ddr5", ZCU102)
    with pytest.raises(ValueError, match="efficiency"):
        DdrModel("x", "", 10, 1.5, 100, 100)
    assert memory_model("ideal", ZCU102) is IDEAL_DDR


# ---------------------------------------------------------------------------------------------- the harness in time


@pytest.fixture
def dev(standin_config: ProcessorConfig, standin_library: Path):
    with VerilatorDevice(standin_config, library=standin_library) as device:
        yield device


def _copy_traced(dev: VerilatorDevice, src: int, dst: int, length: int) -> tuple[int, list[int]]:
    """Run one stand-in copy one cycle at a time; return its cycles and the read + write beats after each cycle."""
    from rtl_fixtures.standin_top import StandInReg

    base = dev.ddr_phys_base
    dev.write_reg(Reg.DDR_BASE_LO, base & 0xFFFFFFFF)
    dev.write_reg(Reg.DDR_BASE_HI, base >> 32)
    for reg, value in ((StandInReg.SRC, src), (StandInReg.DST, dst), (StandInReg.LEN, length),
                       (StandInReg.FLAGS, 0)):
        dev.write_reg(reg, value)
    s = dev.stats()
    beats0 = s["read_beats"] + s["write_beats"]
    start = dev.cycles
    dev.write_reg(Reg.CTRL, CTRL_START | CTRL_IRQ_EN)
    s = dev.stats()
    beats = [s["read_beats"] + s["write_beats"] - beats0]
    for _ in range(200_000):
        if dev.irq:
            break
        dev.step(1)
        s = dev.stats()
        beats.append(s["read_beats"] + s["write_beats"] - beats0)
    assert dev.irq
    return dev.cycles - start, beats


#: ZCU102's bandwidth with a negligible latency, so that copies are bandwidth-bound, not latency-bound
QUICK_ZCU102 = dataclasses.replace(ZCU102_DDR, name="zcu102-4ns", read_latency_ns=4.0, write_latency_ns=4.0)
#: 1.2 GB/s: 0.3 beat of 16 B per cycle at 250 MHz
NARROW = DdrModel("narrow", "test", peak_gbps=1.2, efficiency=1.0, read_latency_ns=4.0, write_latency_ns=4.0)


@pytest.mark.parametrize(("model", "mhz", "binding"), [
    (ZCU102_DDR, 250, False), (ZCU102_DDR, 1000, False), (QUICK_ZCU102, 1000, True), (NARROW, 250, True)])
def test_harness_never_exceeds_the_shared_bandwidth(dev: VerilatorDevice, model: DdrModel, mhz: int, binding: bool):
    length, src, dst = 0x3000, 0x1000, 0x20000
    data = fill(dev, dst, length)
    dev.write_ddr(src, data)
    timing = dev.set_memory_model(model, clock_mhz=mhz)
    cycles, beats = _copy_traced(dev, src, dst, length)
    check_copy(dev, src, dst, data)
    moved = 2 * length  # every byte read once and written once
    assert beats[-1] * 16 == moved
    # in every window of cycles, at most rate x window beats (+ the controller's one-beat credit), from the
    # cumulative beat counts (independent of the harness's credit arithmetic)
    rate = float(timing.shared_beats_per_cycle)
    cum = np.asarray(beats)
    n = len(cum)
    for window in (1, 2, 5, 16, 64, 256, n - 1):
        most = int(max(cum[i + window] - cum[i] for i in range(0, n - window)))
        assert most <= rate * window + 1 + rate, (window, most, rate)
        assert most <= 2 * window  # each direction at most one beat per cycle (the port)
    # in time: the bytes moved never exceed the model's bandwidth over the copy
    assert moved / (cycles / (mhz * 1e6)) <= model.bandwidth_gbps * 1e9
    if binding:  # the limit is what paces the copy: it is reached, not just respected
        assert moved / 16 >= 0.8 * rate * cycles


def test_high_clock_costs_more_cycles_per_byte(dev: VerilatorDevice):
    length, src, dst = 0x4000, 0x1000, 0x40000
    data = fill(dev, dst, length)
    dev.write_ddr(src, data)
    beats = 2 * length // 16  # read and written
    cycles, quick = {}, {}
    for mhz in (125, 250, 1000):
        dev.set_memory_model(ZCU102_DDR, clock_mhz=mhz)
        cycles[mhz] = copy(dev, src, dst, length)
        check_copy(dev, src, dst, data)
        dev.set_memory_model(QUICK_ZCU102, clock_mhz=mhz)
        quick[mhz] = copy(dev, src, dst, length)
        check_copy(dev, src, dst, data)
    # bandwidth alone: at 125 and 250 MHz the port (and the stand-in) paces the copy, the controller allows 7.2 /
    # 3.6 beats per cycle: the same cycles; at 1000 MHz the controller does (0.9 beat per cycle for read and write
    # beats together): at least beats / 0.9 cycles, more than at 250 MHz
    assert quick[125] == quick[250]
    assert quick[1000] >= beats / 0.9 and quick[1000] > quick[250]
    # with the 180 ns latency, the cycles per byte grow with the clock (the latency is fixed in time)
    assert cycles[125] < cycles[250] < cycles[1000]
    assert cycles[1000] / 1000 < cycles[250] / 250  # but the time still falls
    for mhz, c in cycles.items():
        assert 2 * length / (c / (mhz * 1e6)) <= 14.4e9


def test_harness_honours_the_latency_in_ns(dev: VerilatorDevice):
    length, src, dst = 16 * 16, 0x1000, 0x20000  # one burst of 16 beats each way
    data = fill(dev, dst, length)
    dev.write_ddr(src, data)
    slow = DdrModel("slow", "test", peak_gbps=100.0, efficiency=1.0, read_latency_ns=2000.0, write_latency_ns=1000.0)
    t = dev.set_memory_model(slow, clock_mhz=250)
    assert (t.read_latency, t.write_latency) == (500, 250)
    cycles = copy(dev, src, dst, length)
    check_copy(dev, src, dst, data)
    # the write can start only after the read data arrived, and completes only after its response
    assert cycles >= 500 + 250 + 16
    fast = dataclasses.replace(slow, read_latency_ns=4.0, write_latency_ns=4.0)
    dev.set_memory_model(fast, clock_mhz=250)
    quick = copy(dev, src, dst, length)
    assert cycles - quick >= (500 - 1) + (250 - 1)
    dev.set_memory_model("ideal")
    assert dev.ddr_timing["shared_beats_per_cycle"] is None and dev.ddr_timing["read_latency"] == 24


# ---------------------------------------------------------------------------------------------- processor + estimate


@pytest.mark.parametrize("netname", ["classifier", "residual"])
def test_processor_under_a_binding_memory_model(netname: str):
    """small_int8 (8-byte beats at 200 MHz) behind a 0.8 GB/s, 400 ns DDR: 0.5 beat per cycle for both directions
    together. Outputs equal the golden model; the estimate under the same model stays within 3% of the RTL."""
    from helpers import stable_seed

    from dlproc.runtime.driver import Driver
    from dlproc.runtime.estimate import estimate_performance
    from dlproc.runtime.profile import profile_from_runs
    from dlproc.runtime.workflow import Workflow
    from dlproc.sim.golden import GoldenDevice

    model, _ = ALL_NETS[netname]()
    config = ProcessorConfig.preset("small_int8")
    # half a beat per processor cycle at the configuration's clock (0.8 GB/s for 8-byte beats at 200 MHz)
    half_beat_gbps = config.clock_mhz * 1e6 * config.beat_bytes / 2 / 1e9
    narrow = DdrModel("narrow", "test", peak_gbps=half_beat_gbps, efficiency=1.0, read_latency_ns=400.0,
                      write_latency_ns=200.0)
    rng = np.random.default_rng(stable_seed(netname, "memory"))
    wf = Workflow(model, processor=config, target="ref")
    wf.calibrate(rng.standard_normal((4, *wf.input_shape)).astype(np.float32))
    net = wf.compile()
    x = rng.standard_normal(wf.input_shape).astype(np.float32)
    golden = Driver(GoldenDevice(config))
    golden.load(net)
    _, _, want = golden.infer(x, keep_int=True)
    with VerilatorDevice(config, memory=narrow) as device:
        rtl = Driver(device, timeout_s=300)
        rtl.load(net)
        stats0 = device.stats()
        _, runs, got = rtl.infer(x, keep_int=True)
        stats = device.stats()
        device.check_protocol()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"tensor {name}")
    measured = profile_from_runs(net, [runs]).total_cycles
    timing = narrow.timing(config)
    assert timing.shared_beats_per_cycle == Fraction(1, 2)
    beats = (stats["read_beats"] - stats0["read_beats"]) + (stats["write_beats"] - stats0["write_beats"])
    elapsed = stats["cycles"] - stats0["cycles"]
    assert beats <= 0.5 * elapsed + 2
    estimated = estimate_performance(net, ddr=narrow).total_cycles
    assert abs(estimated - measured) <= 0.03 * measured, (estimated, measured)
    ideal = estimate_performance(net, ddr="ideal").total_cycles
    assert estimated > ideal  # the narrow memory costs time the ideal model does not see


def test_estimate_follows_the_clock_as_the_board_would():
    """Same program at 100 and 400 MHz: the ideal model's cycles do not move (frames/s x4); under the ZCU102 model the
    latency in ns costs more cycles at the higher clock, so frames/s grow by less than x4 but still grow."""
    from dlproc.runtime.estimate import estimate_performance
    from dlproc.runtime.workflow import Workflow

    model, _ = ALL_NETS["residual"]()
    wf = Workflow(model, processor="small_int8", target="ref")
    wf.calibrate(np.random.default_rng(0).standard_normal((2, *wf.input_shape)).astype(np.float32))
    net = wf.compile()
    cycles = {}
    for mhz in (100, 400):
        net.config = dataclasses.replace(net.config, clock_mhz=mhz)
        cycles[mhz] = {mem: estimate_performance(net, ddr=mem).total_cycles for mem in ("ideal", "zcu102")}
    assert cycles[100]["ideal"] == cycles[400]["ideal"]
    assert cycles[100]["zcu102"] < cycles[400]["zcu102"] < 4 * cycles[100]["zcu102"]
