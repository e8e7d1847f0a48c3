"""Property test: random layer shapes x random small configurations, the RTL equals the golden model.

Hypothesis draws small networks (a convolution with random channels, size, kernel, stride, padding, dilation and
groups, followed by a random pooling, residual add or fc head) and runs them on two small configurations whose lane
counts, bus widths and buffer sizes differ from the presets (so tiling, kernel-row splitting and sub-block stores
are exercised with other geometry). The same two configurations also hold the performance estimate within 5% of
the RTL's cycle counter on every test network. One Verilator model per configuration is built and cached.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from nets import ALL_NETS, NetBuilder

from dlproc.errors import CompileError
from dlproc.processor.config import ProcessorConfig
from dlproc.runtime.driver import DeviceMismatch, Driver
from dlproc.runtime.estimate import estimate_performance
from dlproc.runtime.profile import profile_from_runs
from dlproc.runtime.workflow import Workflow
from dlproc.sim.golden import GoldenDevice

CONFIGS = {
    # wide lanes and bus, few accumulators: many output tiles, 2 sub-blocks per output entry
    "wide": ProcessorConfig(dtype="int8", conv_ic_lanes=16, conv_oc_lanes=32, fc_threads=8, axi_data_width=128,
                            input_buffer_kib=8, weight_buffer_kib=32, acc_buffer_entries=128, param_buffer_entries=16,
                            clock_mhz=150.0, ddr_size=1 << 24),
    # square 8x8 array, tiny weight buffer (16 entries per half): kernel rows are split above 4x4
    "square": ProcessorConfig(dtype="int8", conv_ic_lanes=8, conv_oc_lanes=8, fc_threads=4, axi_data_width=64,
                              input_buffer_kib=2, weight_buffer_kib=2, acc_buffer_entries=64, param_buffer_entries=8,
                              clock_mhz=300.0, ddr_size=1 << 24),
}


@st.composite
def networks(draw):
    groups = draw(st.sampled_from([1, 1, 2, "dw"]))
    cin = draw(st.integers(1, 20)) * (2 if groups == 2 else 1)
    cout = cin if groups == "dw" else draw(st.integers(1, 24)) * (2 if groups == 2 else 1)
    g = cin if groups == "dw" else groups
    h, w = draw(st.integers(3, 19)), draw(st.integers(3, 19))
    k = draw(st.sampled_from([1, 2, 3, 5, 7]))
    dil = draw(st.sampled_from([1, 1, 2])) if k > 1 else 1
    pad = draw(st.integers(0, (k - 1) * dil // 2 + 1))
    stride = draw(st.sampled_from([1, 2, 3]))
    assume_ok = (h + 2 * pad - dil * (k - 1) - 1) >= 0 and (w + 2 * pad - dil * (k - 1) - 1) >= 0
    if not assume_ok:
        pad = (dil * (k - 1) + 1) // 2 + 1
    head = draw(st.sampled_from(["none", "maxpool", "avgpool", "gap", "add", "fc"]))
    seed = draw(st.integers(0, 2**16))
    nb = NetBuilder("prop", (1, cin, h, w), seed=seed)
    y = nb.relu(nb.conv("input", cin, cout, k, stride=stride, pad=pad, dilation=dil, group=g))
    ho, wo = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1, (w + 2 * pad - dil * (k - 1) - 1) // stride + 1
    if head == "maxpool" and min(ho, wo) >= 2:
        y = nb.maxpool(y, 2, 2)
    elif head == "avgpool" and min(ho, wo) >= 2:
        y = nb.avgpool(y, 2, 1)
    elif head == "gap":
        y = nb.node("GlobalAveragePool", [y])
    elif head == "add":
        y = nb.node("Add", [y, nb.conv(y, cout, cout, 1)])
    elif head == "fc":
        y = nb.gemm(nb.node("Flatten", [y], axis=1), cout * ho * wo, draw(st.integers(1, 40)))
    return nb.model([y]), (1, cin, h, w)


def _compile(model, cfg, rng):
    wf = Workflow(model, processor=cfg, target="ref")
    wf.calibrate(rng.standard_normal((4, *wf.input_shape)).astype(np.float32))
    try:
        return wf, wf.compile()
    except CompileError as exc:
        # A drawn layer too large for this configuration's buffers is refused by design, with a clear error (tested
        # in test_bad_input/test_backend); the property is about the programs that compile.
        assume("cannot be mapped onto processor" not in str(exc))
        raise


def _run_both(net, dev, x):
    golden = Driver(GoldenDevice(net.config))
    golden.load(net)
    rtl = Driver(dev, timeout_s=300)
    rtl.load(net)
    _, _, want = golden.infer(x, keep_int=True)
    _, runs, got = rtl.infer(x, keep_int=True)
    return want, got, runs


@pytest.mark.parametrize("cfgname", list(CONFIGS))
@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(net=networks())
def test_random_layers_rtl_equals_golden(cfgname, net, sim_device):
    model, shape = net
    rng = np.random.default_rng(0)
    wf, compiled = _compile(model, CONFIGS[cfgname], rng)
    x = rng.standard_normal(shape[1:]).astype(np.float32)
    want, got, _ = _run_both(compiled, sim_device(CONFIGS[cfgname]), x)
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"tensor {name}")


@pytest.mark.parametrize("cfgname", list(CONFIGS))
def test_estimate_within_5_percent_of_hardware_counters(cfgname, sim_device):
    errors = {}
    for netname, builder in ALL_NETS.items():
        model, shape = builder()
        rng = np.random.default_rng(1)
        _, compiled = _compile(model, CONFIGS[cfgname], rng)
        x = rng.standard_normal(shape[1:]).astype(np.float32)
        _, _, runs = _run_both(compiled, sim_device(CONFIGS[cfgname]), x)
        measured = profile_from_runs(compiled, [runs]).total_cycles
        errors[netname] = (estimate_performance(compiled).total_cycles - measured) / measured
    print({k: f"{v:+.1%}" for k, v in errors.items()})
    assert all(abs(e) <= 0.05 for e in errors.values()), errors


def test_bundle_for_another_configuration_is_refused_by_the_rtl(sim_device):
    model, _ = ALL_NETS["classifier"]()
    _, compiled = _compile(model, CONFIGS["wide"], np.random.default_rng(2))
    with pytest.raises(DeviceMismatch, match="recompile"):
        Driver(sim_device(CONFIGS["square"])).load(compiled)
