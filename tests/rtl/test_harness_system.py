"""Random layers on the processor in the whole-system Verilator harness (``dlproc.sim.verilator``).

The harness's DDR model adds what cocotbext-axi's RAM does not: long read latency, random stalls on every
channel, read bursts of different IDs returned out of order, DECERR injection, and an AXI protocol checker.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from dlproc.processor.isa import CTRL_CLEAR, CTRL_IRQ_EN, CTRL_START, STATUS_DONE, STATUS_ERROR, ErrorCode, Reg
from dlproc.sim.golden import GoldenDevice

from . import bench_system as layers
from .conftest import BENCH_CONFIG

WINDOW = 1 << 20


class _Both:
    """Writes DDR bytes into the simulator and the golden device alike (what ``random_layer`` needs)."""

    def __init__(self, *devices):
        self.devices = devices

    def put(self, offset: int, blob: bytes) -> None:
        for dev in self.devices:
            dev.write_ddr(offset, blob)


def _start(dev, words):
    dev.write_ddr(layers.PROGRAM_AT, layers.ISA.to_bytes(words))
    dev.write_reg(Reg.INSTR_ADDR, layers.PROGRAM_AT)
    dev.write_reg(Reg.INSTR_COUNT, len(words))
    dev.write_reg(Reg.CTRL, CTRL_CLEAR)
    dev.write_reg(Reg.CTRL, CTRL_START | CTRL_IRQ_EN)


@pytest.fixture(scope="module")
def device():
    verilator = pytest.importorskip("dlproc.sim.verilator")
    with verilator.VerilatorDevice(BENCH_CONFIG, ddr_size=WINDOW) as dev:
        yield dev


@pytest.fixture(scope="module")
def golden(device):
    """The golden device following the simulator through the module (buffers persist between programs)."""
    gold = GoldenDevice(BENCH_CONFIG, ddr_size=WINDOW)
    gold.ddr[:] = device.read_ddr(0, WINDOW)
    return gold


@pytest.mark.parametrize("backpressure, reorder, latency", [(0, False, 5), (30, False, 25), (0, True, 5),
                                                            (30, True, 25)])
def test_random_layers_in_harness(device, golden, backpressure, reorder, latency):
    device.set_backpressure(backpressure, seed=latency)
    device.set_read_reorder(reorder)
    device.set_ddr_timing(read_latency=latency)
    rng, nrng = random.Random(latency + reorder), np.random.default_rng(latency + 2 * reorder)
    for layer in range(4):
        words = layers.random_layer(rng, nrng, _Both(device, golden), layer)
        for dev in (device, golden):
            _start(dev, words)
        assert device.wait_irq(60)
        for reg in (Reg.STATUS, Reg.ERROR_CODE, Reg.ERROR_PC, Reg.PC, Reg.EVENT_COUNT):
            assert device.read_reg(reg) == golden.read_reg(reg), reg.name
        assert device.read_reg(Reg.STATUS) == STATUS_DONE
        np.testing.assert_array_equal(device.read_ddr(0, WINDOW), golden.ddr, err_msg=f"layer {layer}")
    device.check_protocol()


def test_decode_error_stops_cleanly(device):
    rng, nrng = random.Random(7), np.random.default_rng(7)
    words = layers.random_layer(rng, nrng, _Both(device), 0)
    device.set_error_range(layers.WEIGHT_AT, layers.WEIGHT_AT + 64, resp=3)
    _start(device, words)
    assert device.wait_irq(60)
    assert device.read_reg(Reg.STATUS) == STATUS_ERROR
    assert device.read_reg(Reg.ERROR_CODE) == ErrorCode.AXI_READ_ERROR
    assert device.read_reg(Reg.ERROR_PC) == 2            # the weight LOAD
    assert device.read_reg(Reg.EVENT_COUNT) == 1         # only the MARK before it
    device.clear_error_range()
    _start(device, words)
    assert device.wait_irq(60)
    assert device.read_reg(Reg.STATUS) == STATUS_DONE
    device.check_protocol()
