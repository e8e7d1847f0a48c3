"""Every test network (tests/nets.py) on the fp32 processor: RTL == golden model bit for bit, and the golden model
within a relative error of 1e-4 of onnx.reference evaluated in float64.

The fp32 processor needs no calibration: the float graph compiles directly (float32 weights, binary32 parameters).
``"sim"`` (the RTL in Verilator) must write exactly the words the golden model (``"ref"``) writes, every tensor,
including NaN bit patterns; the golden model must stay close to a float64 evaluation of the original ONNX model
(the yardstick: no float32 rounding of its own), with the error measured against the output's largest magnitude.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import stable_seed
from nets import ALL_NETS

from dlproc.compiler.float_ref import float_evaluator
from dlproc.processor.config import ProcessorConfig
from dlproc.processor.isa import END_MARK
from dlproc.runtime.driver import Driver
from dlproc.runtime.workflow import Workflow
from dlproc.sim.golden import GoldenDevice

#: tiny_fp32 (2 x 4 lanes, 64-bit AXI) and a wider one (4 x 8 lanes, 4 fc threads, 128-bit AXI).
CONFIGS = {
    "tiny_fp32": ProcessorConfig.preset("tiny_fp32"),
    "small_fp32": ProcessorConfig(dtype="fp32", conv_ic_lanes=4, conv_oc_lanes=8, fc_threads=4, axi_data_width=128,
                                  input_buffer_kib=16, weight_buffer_kib=16, acc_buffer_entries=512,
                                  param_buffer_entries=32, clock_mhz=200.0, ddr_size=0x0400_0000),
}
#: Relative error allowed against the float64 evaluation (of the output's largest magnitude).
RTOL = 1e-4


def float64_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same network in float64: float initializers, Constant tensors, inputs and outputs become DOUBLE."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for init in list(g.initializer):
        if init.data_type == onnx.TensorProto.FLOAT:
            arr = onnx.numpy_helper.to_array(init).astype(np.float64)
            init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    for node in g.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == onnx.TensorProto.FLOAT:
                attr.t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(attr.t).astype(np.float64),
                                                             attr.t.name))
    for value in list(g.input) + list(g.output) + list(g.value_info):
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            value.type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    return m


def assert_close_to_reference(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape}, reference {want.shape}"
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}"
    scale = float(np.max(np.abs(want))) or 1.0
    err = float(np.max(np.abs(got.astype(np.float64) - want))) / scale
    assert err <= RTOL, f"{what}: relative error {err:.3g} > {RTOL:g} (of max |y| = {scale:.3g})"


@pytest.mark.parametrize("cfgname", list(CONFIGS))
@pytest.mark.parametrize("netname", list(ALL_NETS))
def test_golden_model_matches_float64_reference(netname, cfgname):
    model, _ = ALL_NETS[netname]()
    rng = np.random.default_rng(stable_seed(netname, cfgname, "fp32"))
    wf = Workflow(model, processor=CONFIGS[cfgname], target="ref")
    net = wf.compile()
    assert any(layer.target == "hw" for layer in net.layers)
    x = rng.standard_normal((2, *wf.input_shape)).astype(np.float32)
    got = wf.predict(x)
    got = got if isinstance(got, list) else [got]
    reference = float_evaluator(float64_model(model))
    for i, frame in enumerate(x):
        want = reference.run(None, {"input": frame[None].astype(np.float64)})
        for name, g, w in zip(net.outputs, got, want, strict=True):
            assert_close_to_reference(g[i:i + 1], np.asarray(w, np.float64), f"{netname} output {name!r} frame {i}")


def stored_words(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: np.ascontiguousarray(value).view(np.uint32) for name, value in tensors.items()}


@pytest.mark.parametrize("netname", [pytest.param(n, marks=pytest.mark.slow) if n == "large_conv" else n
                                     for n in ALL_NETS])
def test_rtl_equals_golden_model(netname, sim_device):
    """tiny_fp32 in Verilator against the golden model: every tensor the hardware wrote, bit for bit."""
    cfgname = "tiny_fp32"
    model, _ = ALL_NETS[netname]()
    rng = np.random.default_rng(stable_seed(netname, "fp32 sim"))
    wf = Workflow(model, processor=CONFIGS[cfgname], target="ref")
    net = wf.compile()
    x = rng.standard_normal(wf.input_shape).astype(np.float32)
    golden = Driver(GoldenDevice(net.config))
    golden.load(net)
    rtl = Driver(sim_device(CONFIGS[cfgname]), timeout_s=600)
    rtl.load(net)
    want_out, _, want = golden.infer(x, keep_int=True)
    got_out, runs, got = rtl.infer(x, keep_int=True)
    assert want.keys() == got.keys()
    want_words, got_words = stored_words(want), stored_words(got)
    for name in want:
        np.testing.assert_array_equal(got_words[name], want_words[name], err_msg=f"tensor {name}")
    for name in want_out:
        np.testing.assert_array_equal(got_out[name].view(np.uint32), want_out[name].view(np.uint32))
    hw_layers = {layer.index for layer in net.layers if layer.target == "hw"}
    for run in runs:
        assert run.cycles > 0 and run.events and run.events[-1][0] == END_MARK
    assert {lid for run in runs for lid, _ in run.events} - {END_MARK} == hw_layers


def test_compile_report_and_calibration():
    """No calibration on fp32 (a clear error); the report gives the fp32 parameter memory and the int8 size."""
    from dlproc.compiler.errors import CompileError

    model, _ = ALL_NETS["residual"]()
    wf = Workflow(model, processor="tiny_fp32", target="ref")
    with pytest.raises(CompileError, match="no calibration is needed"):
        wf.calibrate(np.zeros((1, *wf.input_shape), np.float32))
    net = wf.compile()
    hw = [layer for layer in net.layers if layer.target == "hw"]
    count = sum(layer.weight_count for layer in hw)
    assert count == sum(int(np.prod(la.weight.shape)) for la in wf.float_graph.layers
                        if la.target == "hw" and la.weight is not None)
    assert net.weight_bytes >= 4 * count and net.weight_bytes % 4 == 0
    report = net.report()
    assert "fp32" in report.splitlines()[0] and f"as int8 the {count:,} weights would take" in report
    assert "per-channel parameters" in report
