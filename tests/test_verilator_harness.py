"""The Verilator whole-system harness, proven on a stand-in top level with the processor's ports.

The stand-in (``rtl_fixtures/standin_top.py``) copies ``LEN`` bytes from ``SRC`` to ``DST`` in the DDR window
with INCR bursts of up to 16 beats. The tests drive it through :class:`VerilatorDevice` exactly as the runtime
drives the processor: registers over AXI4-Lite, DDR contents through the model, completion through ``irq``.
"""

from __future__ import annotations

import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from rtl_fixtures.standin_top import (
    FLAG_IGNORE_4K,
    FLAG_NO_WLAST,
    MAX_BURST_BEATS,
    STANDIN_MAGIC,
    StandInReg,
    StandInTop,
)

from dlproc.processor.config import ProcessorConfig
from dlproc.processor.isa import CTRL_CLEAR, CTRL_IRQ_EN, CTRL_START, STATUS_DONE, STATUS_ERROR, ErrorCode, Reg
from dlproc.sim.verilator import BusError, ProtocolError, SimulatorError, VerilatorDevice, build_simulator
from dlproc.sim.verilator import build as build_module

#: Configuration with a 32-bit AXI master (scalar Verilator ports instead of VlWide) and 32-bit-ish addresses.
NARROW_CONFIG = ProcessorConfig.preset("tiny_int8")
GUARD = 0xA5  # fill value around copy destinations: it must survive every copy


@pytest.fixture
def dev(standin_config: ProcessorConfig, standin_library: Path):
    with VerilatorDevice(standin_config, library=standin_library) as device:
        yield device


def copy(dev: VerilatorDevice, src: int, dst: int, length: int, *, flags: int = 0, irq: bool = True,
         timeout_s: float = 10.0) -> int:
    """Run one copy of the stand-in; return the cycles until ``irq`` (or the timeout)."""
    base = dev.ddr_phys_base
    dev.write_reg(Reg.DDR_BASE_LO, base & 0xFFFFFFFF)
    dev.write_reg(Reg.DDR_BASE_HI, base >> 32)
    dev.write_reg(StandInReg.SRC, src)
    dev.write_reg(StandInReg.DST, dst)
    dev.write_reg(StandInReg.LEN, length)
    dev.write_reg(StandInReg.FLAGS, flags)
    start = dev.cycles
    dev.write_reg(Reg.CTRL, CTRL_START | (CTRL_IRQ_EN if irq else 0))
    if irq:
        assert dev.wait_irq(timeout_s), "no irq within the timeout"
    return dev.cycles - start


def fill(dev: VerilatorDevice, dst: int, length: int, *, guard: int = 64) -> np.ndarray:
    """Random source data; the destination and ``guard`` bytes around it set to GUARD."""
    lo, hi = max(dst - guard, 0), min(dst + length + guard, dev.ddr_size)
    dev.write_ddr(lo, np.full(hi - lo, GUARD, np.uint8))
    return np.random.default_rng(length).integers(0, 256, length, dtype=np.uint8)


def check_copy(dev: VerilatorDevice, src: int, dst: int, data: np.ndarray, *, guard: int = 64) -> None:
    assert dev.read_reg(Reg.STATUS) == STATUS_DONE
    np.testing.assert_array_equal(dev.read_ddr(dst, data.size), data)
    lo = max(dst - guard, 0)
    assert (dev.read_ddr(lo, dst - lo) == GUARD).all(), "bytes before the destination were overwritten"
    hi = min(dst + data.size + guard, dev.ddr_size)
    assert (dev.read_ddr(dst + data.size, hi - dst - data.size) == GUARD).all(), "bytes after it were overwritten"
    dev.check_protocol()


# ---------------------------------------------------------------------------------------------- registers and DDR


def test_registers(dev: VerilatorDevice):
    assert dev.read_reg(Reg.MAGIC) == STANDIN_MAGIC
    for value in (0, 1, 0xDEADBEEF, 0xFFFFFFFF, 0x12345678):
        dev.write_reg(StandInReg.SCRATCH, value)
        assert dev.read_reg(StandInReg.SCRATCH) == value
    assert dev.read_reg(Reg.STATUS) == 0
    assert not dev.irq


def test_register_error_responses(dev: VerilatorDevice):
    assert dev.read_reg_raw(0x200) == (2, 0)
    with pytest.raises(BusError, match="SLVERR") as info:
        dev.read_reg(0x204)
    assert info.value.resp == 2 and info.value.offset == 0x204
    with pytest.raises(BusError):
        dev.write_reg(0x208, 1)
    assert dev.write_reg_raw(StandInReg.SCRATCH, 7) == 0


def test_register_access_clocks_the_design(dev: VerilatorDevice):
    before = dev.cycles
    dev.read_reg(Reg.MAGIC)
    assert 2 <= dev.cycles - before < 10


def test_ddr_round_trip(dev: VerilatorDevice):
    rng = np.random.default_rng(1)
    for offset, length in ((0, 1), (3, 100), (4095, 2), (0x1234, 5000), (dev.ddr_size - 17, 17)):
        data = rng.integers(0, 256, length, dtype=np.uint8)
        dev.write_ddr(offset, data)
        np.testing.assert_array_equal(dev.read_ddr(offset, length), data)
    dev.write_ddr(0x100, b"\x01\x02\x03")
    dev.write_ddr(0x200, np.arange(4, dtype="<u4"))  # raw bytes of any array
    assert dev.read_ddr(0x100, 3).tolist() == [1, 2, 3]
    assert dev.read_ddr(0x200, 16).view("<u4").tolist() == [0, 1, 2, 3]
    assert dev.read_ddr(0, 0).size == 0
    with pytest.raises(ValueError, match="outside"):
        dev.write_ddr(dev.ddr_size - 1, b"ab")
    with pytest.raises(ValueError, match="outside"):
        dev.read_ddr(-1, 4)


# ---------------------------------------------------------------------------------------------- the copy engine


@pytest.mark.parametrize(("src", "dst", "length"), [
    (0x1000, 0x8000, 16),                # one beat
    (0x1000, 0x8000, 16 * 16),           # one full burst
    (0x1000, 0x8000, 8192),              # many bursts
    (0x0F80, 0x20F40, 0x300),            # source and destination bursts split at different 4 KiB boundaries
    (0xFFFE0, 0x30000, 0x20),            # source ends at the last byte of the window
])
def test_copy(dev: VerilatorDevice, src: int, dst: int, length: int):
    data = fill(dev, dst, length)
    dev.write_ddr(src, data)
    cycles = copy(dev, src, dst, length)
    check_copy(dev, src, dst, data)
    assert dev.irq
    stats = dev.stats()
    assert stats["read_beats"] == stats["write_beats"] == length // 16
    assert stats["read_bursts"] >= -(-length // (16 * MAX_BURST_BEATS))
    assert stats["decode_error_bursts"] == stats["injected_error_bursts"] == 0
    assert cycles >= length // 16
    dev.write_reg(Reg.CTRL, CTRL_CLEAR)
    assert not dev.irq and dev.read_reg(Reg.STATUS) == 0


def test_no_irq_without_irq_enable(dev: VerilatorDevice):
    data = fill(dev, 0x4000, 64)
    dev.write_ddr(0, data)
    copy(dev, 0, 0x4000, 64, irq=False)
    assert not dev.wait_irq(0.05)
    assert dev.read_reg(Reg.STATUS) == STATUS_DONE  # finished, but the interrupt is masked
    dev.write_reg(Reg.CTRL, CTRL_IRQ_EN)
    assert dev.wait_irq(0.05)


def test_wait_irq_times_out(dev: VerilatorDevice):
    assert not dev.wait_irq(0.05)
    assert dev.run_until_irq(1000) == 1000


@pytest.mark.parametrize(("percent", "timing", "reorder"), [
    (30, {}, False),
    (50, {"read_latency": 1, "write_latency": 1}, True),
    (70, {"read_latency": 3, "beats_per_cycle": Fraction(1, 3), "max_outstanding": 1}, True),
])
def test_copy_with_backpressure(dev: VerilatorDevice, percent: int, timing: dict, reorder: bool):
    length, src, dst = 0x1400, 0x0C00, 0x40F00
    data = fill(dev, dst, length)
    dev.write_ddr(src, data)
    dev.set_ddr_timing(**timing)
    dev.set_read_reorder(reorder)
    dev.set_backpressure(percent, seed=percent)
    stalled = copy(dev, src, dst, length)
    check_copy(dev, src, dst, data)
    assert stalled > 2 * length // 16


def test_ddr_timing_sets_the_pace(dev: VerilatorDevice):
    length = 64 * 16
    data = fill(dev, 0x8000, length)
    dev.write_ddr(0, data)
    dev.set_ddr_timing(read_latency=1, write_latency=1)
    fast = copy(dev, 0, 0x8000, length)
    dev.set_ddr_timing(read_latency=101)
    slow = copy(dev, 0, 0x8000, length)
    bursts = length // (16 * MAX_BURST_BEATS)
    assert slow - fast == 100 * bursts  # the stand-in waits out the read latency of every burst
    dev.set_ddr_timing(read_latency=1, beats_per_cycle=0.25)
    throttled = copy(dev, 0, 0x8000, length)
    assert throttled >= 4 * (length // 16)
    check_copy(dev, 0, 0x8000, data)
    assert dev.ddr_timing["beats_per_cycle"] == Fraction(1, 4)
    with pytest.raises(ValueError, match="timing"):
        dev.set_ddr_timing(beats_per_cycle=2)
    with pytest.raises(ValueError, match="timing"):
        dev.set_ddr_timing(read_latency=0)
    assert dev.ddr_timing["read_latency"] == 1


# ---------------------------------------------------------------------------------------------- error responses


def test_error_range_on_read(dev: VerilatorDevice):
    dev.set_error_range(0x2000, 0x2010, resp=2)  # one beat inside the source
    copy(dev, 0x1000, 0x8000, 0x2000)
    assert dev.read_reg(Reg.STATUS) == STATUS_ERROR
    assert dev.read_reg(Reg.ERROR_CODE) == ErrorCode.AXI_READ_ERROR
    assert dev.stats()["injected_error_bursts"] == 1
    dev.check_protocol()


def test_error_range_on_write(dev: VerilatorDevice):
    fill(dev, 0x8000, 0x100)
    dev.set_error_range(0x8000, 0x8001, resp=3)
    copy(dev, 0x1000, 0x8000, 0x100)
    assert dev.read_reg(Reg.STATUS) == STATUS_ERROR
    assert dev.read_reg(Reg.ERROR_CODE) == ErrorCode.AXI_WRITE_ERROR
    assert (dev.read_ddr(0x8000, 0x100) == GUARD).all(), "a refused burst must not write"
    dev.clear_error_range()
    dev.write_reg(Reg.CTRL, CTRL_CLEAR)
    copy(dev, 0x1000, 0x8000, 0x100)
    assert dev.read_reg(Reg.STATUS) == STATUS_DONE


def test_outside_the_window_answers_decerr(dev: VerilatorDevice):
    dev.write_reg(Reg.DDR_BASE_LO, 0)  # the stand-in now addresses physical 0x1000, below the window
    dev.write_reg(Reg.DDR_BASE_HI, 0)
    dev.write_reg(StandInReg.SRC, 0x1000)
    dev.write_reg(StandInReg.DST, 0x2000)
    dev.write_reg(StandInReg.LEN, 0x40)
    dev.write_reg(Reg.CTRL, CTRL_START | CTRL_IRQ_EN)
    assert dev.wait_irq(5)
    assert dev.read_reg(Reg.ERROR_CODE) == ErrorCode.AXI_READ_ERROR
    assert dev.stats()["decode_error_bursts"] == 1
    dev.check_protocol()  # an address outside the window is a decode error, not a protocol violation


# ---------------------------------------------------------------------------------------------- protocol checker


def test_protocol_error_4k_crossing(dev: VerilatorDevice):
    data = fill(dev, 0x8000, 0x200)
    dev.write_ddr(0x0F80, data)
    copy(dev, 0x0F80, 0x8000, 0x200, flags=FLAG_IGNORE_4K)
    assert dev.protocol_errors >= 1
    assert "4 KiB" in dev.first_protocol_error and "AR" in dev.first_protocol_error
    with pytest.raises(ProtocolError, match="4 KiB"):
        dev.check_protocol()
    np.testing.assert_array_equal(dev.read_ddr(0x8000, 0x200), data)  # the model still serves the burst


def test_protocol_error_wlast(dev: VerilatorDevice):
    copy(dev, 0, 0x8000, 0x40, flags=FLAG_NO_WLAST)
    assert dev.protocol_errors == 1  # one burst of 4 beats, WLAST missing on its last beat
    assert "WLAST is 0, expected 1" in dev.last_protocol_error
    assert dev.read_reg(Reg.STATUS) == STATUS_DONE  # the burst still ends after AWLEN + 1 beats


def test_protocol_checker_quiet_under_stress(dev: VerilatorDevice):
    # VALID held and payload stable while READY is withheld: the stand-in must not trip the stability checks.
    dev.set_backpressure(90, seed=7)
    data = fill(dev, 0x10000, 0x800)
    dev.write_ddr(0x3000, data)
    copy(dev, 0x3000, 0x10000, 0x800)
    check_copy(dev, 0x3000, 0x10000, data)


# ---------------------------------------------------------------------------------------------- device life cycle


def test_close_and_context_manager(standin_config: ProcessorConfig, standin_library: Path):
    dev = VerilatorDevice(standin_config, library=standin_library)
    assert dev.ddr_phys_base == standin_config.ddr_base and dev.ddr_size == standin_config.ddr_size
    assert dev.bus_bytes == 16
    dev.close()
    dev.close()  # idempotent
    with pytest.raises(SimulatorError, match="closed"):
        dev.read_reg(Reg.MAGIC)


def test_two_devices_are_independent(standin_config: ProcessorConfig, standin_library: Path):
    with VerilatorDevice(standin_config, library=standin_library) as a, \
            VerilatorDevice(standin_config, library=standin_library, ddr_size=1 << 16) as b:
        a.write_reg(StandInReg.SCRATCH, 1)
        b.write_reg(StandInReg.SCRATCH, 2)
        a.write_ddr(0, b"a")
        b.write_ddr(0, b"b")
        assert (a.read_reg(StandInReg.SCRATCH), b.read_reg(StandInReg.SCRATCH)) == (1, 2)
        assert (a.read_ddr(0, 1).tobytes(), b.read_ddr(0, 1).tobytes()) == (b"a", b"b")
        assert b.ddr_size == 1 << 16


def test_reset_keeps_ddr(dev: VerilatorDevice):
    dev.write_reg(StandInReg.SCRATCH, 5)
    dev.write_ddr(0, b"keep")
    dev.reset()
    assert dev.read_reg(StandInReg.SCRATCH) == 0
    assert dev.read_ddr(0, 4).tobytes() == b"keep"


def test_narrow_bus(tmp_path: Path):
    # 32-bit data: Verilator gives plain integers instead of VlWide for wdata/rdata.
    library = build_simulator(NARROW_CONFIG, top=StandInTop)
    with VerilatorDevice(NARROW_CONFIG, library=library) as dev:
        assert dev.bus_bytes == 4
        data = fill(dev, 0x2000, 0x104)
        dev.write_ddr(0xFC0, data)
        dev.set_backpressure(40, seed=3)
        copy(dev, 0xFC0, 0x2000, 0x104)
        check_copy(dev, 0xFC0, 0x2000, data)
        assert dev.stats()["read_beats"] == 0x104 // 4


def test_fst_trace(standin_config: ProcessorConfig, tmp_path: Path):
    trace = tmp_path / "standin.fst"
    with VerilatorDevice(standin_config, top=StandInTop, trace=trace) as dev:
        dev.write_ddr(0, np.arange(64, dtype=np.uint8))
        copy(dev, 0, 0x1000, 64)
    assert trace.stat().st_size > 100
    with pytest.raises(SimulatorError, match="without tracing"):
        VerilatorDevice(standin_config, library=build_simulator(standin_config, top=StandInTop), trace=trace)


# ---------------------------------------------------------------------------------------------- the build cache


def test_build_is_cached(standin_config: ProcessorConfig, standin_library: Path, capsys: pytest.CaptureFixture):
    assert build_simulator(standin_config, top=StandInTop) == standin_library
    assert "building" not in capsys.readouterr().err
    assert "module dlproc_top" in (standin_library.parent / "dlproc_top.v").read_text()
    assert (standin_library.parent / "meta.json").exists()


def test_concurrent_builds_build_once(standin_config: ProcessorConfig, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DLPROC_CACHE", str(tmp_path))
    calls: list[Path] = []

    def fake_run(build_dir: Path, trace: bool, jobs: int) -> None:
        calls.append(build_dir)
        threading.Event().wait(0.2)  # long enough for the other thread to queue on the lock
        (build_dir / build_module.LIBRARY_NAME).write_bytes(b"not a real library")
        (build_dir / "obj").mkdir()

    monkeypatch.setattr(build_module, "_run_verilator", fake_run)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(
        build_simulator(standin_config, top=StandInTop, quiet=True))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results[0] == results[1] and results[0].read_bytes() == b"not a real library"
    leftovers = [p.name for p in (tmp_path / "verilator").iterdir() if p.name.startswith(".")]
    assert leftovers == [], "temporary build directories must not stay behind"


def test_failed_build_leaves_no_entry(standin_config: ProcessorConfig, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DLPROC_CACHE", str(tmp_path))

    def failing_run(build_dir: Path, trace: bool, jobs: int) -> None:
        (build_dir / "build.log").write_text("g++: fatal error\n")
        raise build_module.BuildError("Verilator build failed")

    monkeypatch.setattr(build_module, "_run_verilator", failing_run)
    with pytest.raises(build_module.BuildError):
        build_simulator(standin_config, top=StandInTop, quiet=True)
    entries = list((tmp_path / "verilator").iterdir())
    assert all(p.suffix in (".lock", ".log") for p in entries), entries
    assert any(p.name.endswith(".failed.log") for p in entries)


def test_top_without_the_ports_is_refused(standin_config: ProcessorConfig):
    from amaranth.hdl import Fragment, Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import Out

    class NotATop(wiring.Component):
        def __init__(self):
            super().__init__({"irq": Out(1)})

        def elaborate(self, platform):
            return Module()

    not_a_top = NotATop()
    with pytest.raises(build_module.BuildError, match="s_axil"):
        build_simulator(standin_config, top=lambda config: not_a_top)
    Fragment.get(not_a_top, None)  # mark it used: Amaranth warns about components never elaborated
