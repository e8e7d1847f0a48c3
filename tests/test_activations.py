"""Workflow.activations: every layer's output read from DDR, against the independent integer reference, and
identical bit for bit between the golden model ("ref") and the RTL ("sim", tiny_int8)."""

import json

import numpy as np
import pytest
from int_reference import run_int_reference
from nets import ALL_NETS

from dlproc.runtime.cli import main
from dlproc.runtime.workflow import Workflow

NETS = ["residual", "host_ops", "concat", "mlp"]


def _workflow(netname: str, target: str) -> tuple[Workflow, np.ndarray]:
    model, _ = ALL_NETS[netname]()
    rng = np.random.default_rng(21)
    wf = Workflow(model, processor="tiny_int8", target=target, timeout_s=300)
    wf.calibrate(rng.standard_normal((8, *wf.input_shape)).astype(np.float32))
    wf.compile()
    return wf, rng.standard_normal((2, *wf.input_shape)).astype(np.float32)


@pytest.mark.parametrize("netname", NETS)
def test_activations_are_the_integer_reference_dequantized(netname):
    wf, x = _workflow(netname, "ref")
    acts = wf.activations(x)
    assert list(acts) == [layer.name for layer in wf.compiled.layers]
    compared = set()
    for i, frame in enumerate(x):
        ref = run_int_reference(wf.graph, frame[None])
        for layer in wf.compiled.layers:
            tensor = layer.outputs[0]
            got = acts[layer.name][i:i + 1]
            assert got.dtype == np.float32 and got.shape == tuple(wf.compiled.tensors[tensor]["onnx_shape"])
            scale = wf.graph.tensors[tensor].scale
            if tensor in ref and scale and layer.target == "hw":
                # the stored integers come back exactly: value / scale is the int8 the reference computed
                want = ref[tensor].astype(np.float32) * np.float32(scale)
                np.testing.assert_array_equal(got, want.reshape(got.shape), err_msg=f"{netname}: {layer.name}")
                compared.add(layer.name)
            elif tensor in ref and scale:
                # a host layer's float output, quantized as the processor reads it, is the reference's int8
                q = np.clip(np.round(got.astype(np.float64) / scale), -128, 127)
                np.testing.assert_array_equal(q, ref[tensor].reshape(got.shape), err_msg=f"{netname}: {layer.name}")
                compared.add(layer.name)
    assert compared == {layer.name for layer in wf.compiled.layers}


@pytest.mark.parametrize("netname", NETS)
def test_activations_identical_on_golden_model_and_rtl(netname):
    ref, x = _workflow(netname, "ref")
    sim, _ = _workflow(netname, "sim")
    try:
        a, b = ref.activations(x[:1]), sim.activations(x[:1])
    finally:
        sim.close()
    assert list(a) == list(b)
    for name in a:  # same dequantization of the same int8 values: equal floats iff equal integers
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_activations_by_tensor_name_and_bad_names():
    wf, x = _workflow("host_ops", "ref")
    layer = wf.compiled.layers[0]
    by_tensor = wf.activations(x[0], layers=[layer.outputs[0]])
    assert list(by_tensor) == [layer.name]
    np.testing.assert_array_equal(by_tensor[layer.name], wf.activations(x[0], layers=layer.name)[layer.name])
    with pytest.raises(ValueError, match="'nope' is neither a layer"):
        wf.activations(x, layers=["nope"])


def test_cli_run_writes_one_npy_per_layer(tmp_path, capsys):
    wf, x = _workflow("host_ops", "ref")
    bundle = wf.compiled.save(tmp_path / "bundle")
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(bundle), "--input", str(tmp_path / "x.npy"), "--activations", str(tmp_path / "acts")]) == 0
    index = json.loads((tmp_path / "acts" / "index.json").read_text())
    want = wf.activations(x)
    assert [e["layer"] for e in index] == list(want)
    for entry in index:
        np.testing.assert_array_equal(np.load(tmp_path / "acts" / entry["file"]), want[entry["layer"]])


def test_activations_on_the_board_driver_equal_ref():
    """Target "fpga": the board's FpgaDevice, its registers and DDR buffer forwarded to a golden device (no board)."""
    from test_fpga_driver import ForwardedRegisters

    from dlproc.processor.config import ProcessorConfig
    from dlproc.runtime.fpga import MmioRegion
    from dlproc.sim.golden import GoldenDevice

    gold = GoldenDevice(ProcessorConfig.preset("tiny_int8"))
    options = {"regs": ForwardedRegisters(gold), "ddr": MmioRegion(gold.ddr, name="golden DDR"),
               "ddr_phys_base": gold.ddr_phys_base, "interrupt": False}
    ref, x = _workflow("residual", "ref")
    model, _ = ALL_NETS["residual"]()
    board = Workflow(model, processor="tiny_int8", target="fpga", device_options=options)
    board.graph, board.compiled = ref.graph, ref.compiled
    with board:
        got = board.activations(x)
    assert any(kind == "r" for kind, _, _ in options["regs"].log)  # it went through the register page
    want = ref.activations(x)
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_fp32_activations_follow_the_float_network():
    """On the fp32 processor the layer outputs are stored as float32: they match the float evaluation closely, in the
    same ONNX layout."""
    from dlproc.compiler.float_ref import run_float

    model, _ = ALL_NETS["concat"]()
    wf = Workflow(model, processor="tiny_fp32", target="ref")
    wf.compile()
    x = np.random.default_rng(4).standard_normal((2, *wf.input_shape)).astype(np.float32)
    acts = wf.activations(x)
    ref = run_float(wf.float_graph, x)
    for layer in wf.compiled.layers:
        want = ref[layer.outputs[0]]
        np.testing.assert_allclose(acts[layer.name], want, rtol=1e-4, atol=1e-4 * np.abs(want).max(),
                                   err_msg=layer.name)
    rows = wf.compare(x).to_dict()["layers"]
    assert all(row["clipped"] == 0 and row["sqnr_db"] > 60 for row in rows)
