"""QDQ models: the export reproduces the processor, models quantized elsewhere compile with their own scales.

Export: every test network is quantized, run on the golden model ("ref") and exported; ``onnx.reference`` on the
exported model must produce every int8 tensor the processor wrote and its outputs exactly. Corner cases of the integer
pipeline (int32 wrap-around, sums beyond float32's exact range) are checked against the independent integer
reference (tests/int_reference.py).

Import: onnxruntime's ``quantize_static`` (QDQ format, symmetric int8) and a hand-made PyTorch-style QDQ model compile
without calibration, keep their scales and weights, and run close to the QDQ model's own evaluation.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from int_reference import run_int_reference
from nets import ALL_NETS, NetBuilder
from onnx import TensorProto, helper, numpy_helper

from dlproc.compiler.errors import CompileError
from dlproc.compiler.float_ref import float_evaluator
from dlproc.compiler.frontend import load_onnx
from dlproc.compiler.qdq import export_qdq
from dlproc.compiler.quantize import quantize, scale_groups
from dlproc.runtime.workflow import Workflow

METHODS = ("minmax", "percentile", "entropy")


def _calibrated(model: onnx.ModelProto, seed: int, **options) -> Workflow:
    wf = Workflow(model, processor="tiny_int8", target="ref")
    rng = np.random.default_rng(seed)
    wf.calibrate(rng.standard_normal((8, *wf.input_shape)).astype(np.float32), **options)
    return wf


def _check_export_matches_processor(wf: Workflow, frames: np.ndarray) -> None:
    session = float_evaluator(wf.export_qdq())
    compared = 0
    for frame in frames:
        ints = wf.run_int(frame)
        want = wf.predict(frame)
        want = [want] if isinstance(want, np.ndarray) else want
        got = session.run(None, {wf.input_name: frame[None]}, intermediate=True)
        for name, value in ints.items():
            q = got[f"{name}_q"]
            assert q.dtype == np.int8
            np.testing.assert_array_equal(q.reshape(value.shape), value, err_msg=f"tensor {name}")
            compared += 1
        for name, value in zip(wf.float_graph.outputs, want, strict=True):
            assert got[name].shape == value.shape and got[name].dtype == np.float32
            # processor outputs are DequantizeLinear bit for bit; host outputs (Softmax, Sigmoid) may differ in ulps
            np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-7, err_msg=f"output {name}")
    hw_layers = [layer for layer in wf.compiled.layers if layer.target == "hw"]  # as compiled for this processor
    assert compared >= len(frames) * len(hw_layers)


@pytest.mark.parametrize("netname", sorted(ALL_NETS))
def test_export_reproduces_the_processor(netname):
    index = sorted(ALL_NETS).index(netname)
    wf = _calibrated(ALL_NETS[netname]()[0], index, method=METHODS[index % 3])
    frames = np.random.default_rng(100 + index).standard_normal((2, *wf.input_shape)).astype(np.float32)
    _check_export_matches_processor(wf, frames)


@pytest.mark.parametrize("netname", ["pooling", "residual", "activations"])
def test_export_reproduces_the_processor_with_power_of_two_scales(netname):
    wf = _calibrated(ALL_NETS[netname]()[0], 7, scale_mode="pow2", per_channel=False)
    _check_export_matches_processor(wf, np.random.default_rng(8).standard_normal((1, *wf.input_shape))
                                    .astype(np.float32))


def test_export_structure():
    """Standard QDQ: int8 tensors from QuantizeLinear, real views from DequantizeLinear, int8 weights; the names of the
    original model's inputs and outputs."""
    model, _ = ALL_NETS["residual"]()
    wf = _calibrated(model, 1)
    exported = wf.export_qdq(batch="N")
    onnx.checker.check_model(exported, full_check=True)
    ops = [n.op_type for n in exported.graph.node]
    hw = [layer for layer in wf.graph.layers if layer.target == "hw"]
    assert ops.count("QuantizeLinear") == len(hw) + 1 and ops.count("DequantizeLinear") == len(hw) + 1
    assert [o.name for o in exported.graph.output] == [o.name for o in model.graph.output]
    assert exported.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    weights = [i for i in exported.graph.initializer if i.name.endswith("weight_q") or "weight_q_t" in i.name]
    assert weights and all(i.data_type == TensorProto.INT8 for i in weights)
    batch = np.random.default_rng(2).standard_normal((3, *wf.input_shape)).astype(np.float32)
    out = float_evaluator(exported).run(None, {wf.input_name: batch})[0]  # symbolic batch: three at once
    np.testing.assert_array_equal(out, wf.predict(batch))


def _one_layer_graph(builder: NetBuilder, output: str, shape: tuple[int, ...]):
    graph = load_onnx(builder.model([output]))
    return quantize(graph, {name: (-1.0, 1.0) for name in graph.tensors}), shape


def test_export_wraps_the_int32_accumulator():
    """A bias at the int32 limit: the processor wraps around, so must the export (the Mod path)."""
    b = NetBuilder("wrap", (1, 2, 3, 3), seed=1)
    y = b.conv("input", 2, 3, 1)
    q, shape = _one_layer_graph(b, y, (1, 2, 3, 3))
    q.layers[0].quant.requant.bias[:] = [(1 << 31) - 5, -(1 << 31) + 3, 7]
    x = np.random.default_rng(0).uniform(-1, 1, (4,) + shape[1:]).astype(np.float32)
    ref = run_int_reference(q, x)[y]
    model = export_qdq(q)
    assert "Mod" in [n.op_type for n in model.graph.node]
    session = float_evaluator(model)
    got = np.concatenate([session.run(None, {"input": x[i:i + 1]}, intermediate=True)[f"{y}_q"] for i in range(4)])
    np.testing.assert_array_equal(got, ref)
    assert np.any(ref[:, 0] < 0) and np.any(ref[:, 1] > 0)  # the wrap did happen


def test_export_sums_beyond_float32_in_float64():
    """An fc layer with 3000 inputs: its sums can pass 2**24, so the export computes it in float64."""
    b = NetBuilder("wide", (1, 3000), seed=2)
    y = b.gemm("input", 3000, 4)
    q, shape = _one_layer_graph(b, y, (1, 3000))
    layer = q.layers[0]
    layer.quant.weight[:] = np.where(np.random.default_rng(1).random(layer.quant.weight.shape) < 0.5, 127, -127)
    rq = layer.quant.requant
    rq.bias[:] = 0
    rq.mult_pos[:] = rq.mult_neg[:] = 1 << 14
    rq.shift[:] = 35  # keep the huge sums inside int8 after requantization
    x = np.random.default_rng(3).choice([-1.0, 1.0], (3,) + shape[1:]).astype(np.float32)
    x[0] = np.sign(layer.quant.weight[0])  # the first output reaches 3000 * 127 * 127 > 2**24
    ref = run_int_reference(q, x)[y]
    model = export_qdq(q)
    matmul = next(n for n in model.graph.node if n.op_type == "MatMul")
    weight_cast = next(n for n in model.graph.node if n.output[0] == matmul.input[1])
    input_cast = next(n for n in model.graph.node if n.op_type == "Cast" and n.input[0] == "input_q")
    assert weight_cast.attribute[0].i == input_cast.attribute[0].i == TensorProto.DOUBLE
    session = float_evaluator(model)
    got = np.concatenate([session.run(None, {"input": x[i:i + 1]}, intermediate=True)[f"{y}_q"] for i in range(3)])
    np.testing.assert_array_equal(got, ref)
    assert ref[0, 0] == (3000 * 127 * 127 * (1 << 14) + (1 << 34)) >> 35  # the full sum reached the output


def test_export_runs_on_onnxruntime():
    """onnxruntime evaluates the exported model to the processor's outputs too (graph optimizations off: its
    transpose optimizer mis-types QuantizeLinear nodes it creates in opset 21 models)."""
    ort = pytest.importorskip("onnxruntime")
    for netname in ("residual", "host_ops"):
        wf = _calibrated(ALL_NETS[netname]()[0], 3)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(wf.export_qdq().SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        x = np.random.default_rng(4).standard_normal((1, *wf.input_shape)).astype(np.float32)
        want = wf.predict(x)
        want = [want] if isinstance(want, np.ndarray) else want
        for got, value in zip(session.run(None, {wf.input_name: x}), want, strict=True):
            np.testing.assert_allclose(got, value, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------- import


def _ort_quantize(model: onnx.ModelProto, shape: tuple[int, ...], tmp_path, *, symmetric: bool = True):
    quantization = pytest.importorskip("onnxruntime.quantization")
    src, dst = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    onnx.save(model, src)
    rng = np.random.default_rng(5)

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.frames = iter([{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(16)])

        def get_next(self):
            return next(self.frames, None)

    options = {"ActivationSymmetric": True, "WeightSymmetric": True} if symmetric else {}
    quantization.quantize_static(str(src), str(dst), Reader(), quant_format=quantization.QuantFormat.QDQ,
                                 activation_type=quantization.QuantType.QInt8 if symmetric
                                 else quantization.QuantType.QUInt8,
                                 weight_type=quantization.QuantType.QInt8, per_channel=True, extra_options=options)
    return onnx.load(dst)


@pytest.mark.parametrize("netname", ["concat", "pooling", "residual"])
def test_onnxruntime_qdq_model_compiles_with_its_scales(netname, tmp_path):
    import onnxruntime as ort

    model, shape = ALL_NETS[netname]()
    qdq = _ort_quantize(model, shape, tmp_path)
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    wf = Workflow(qdq, processor="tiny_int8", target="ref")
    assert wf.imported_scales
    if netname == "residual":  # BatchNormalization folds into the convs: their weights are quantized anew
        with pytest.warns(UserWarning, match="no longer lie on the int8 grid"):
            net = wf.compile()
    else:
        net = wf.compile()  # no calibration
    assert net.layers
    # the activation scales are onnxruntime's (the largest of a group the processor needs on one scale: concat and
    # max-pool inputs and outputs)
    ort_scale = {n.input[0]: float(inits[n.input[1]]) for n in qdq.graph.node
                 if n.op_type == "QuantizeLinear" and n.input[0] in wf.graph.tensors}
    assert ort_scale
    for group in scale_groups(wf.graph):
        for name in group & set(ort_scale):
            want = max(ort_scale.get(v, 0.0) for v in group)
            assert wf.graph.tensors[name].scale == pytest.approx(want, rel=1e-7)
    # so are the int8 weights of every conv whose weights kept their grid (none had a BatchNormalization folded in)
    weight_of = {n.output[0]: n.input[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    conv_nodes = {n.name: n for n in qdq.graph.node if n.op_type == "Conv"}
    kept = 0
    for layer in wf.graph.layers:
        node = conv_nodes.get(layer.name)
        if node is None or "weight_scale" not in layer.attrs:
            continue
        ratio = layer.weight / layer.attrs["weight_scale"].reshape(-1, 1, 1, 1)
        if np.abs(ratio - np.round(ratio)).max() < 1e-3:
            np.testing.assert_array_equal(layer.quant.weight, inits[weight_of[node.input[1]]])
            kept += 1
    assert kept or netname == "residual"
    # and the processor's outputs are close to onnxruntime's own evaluation of the QDQ model
    x = np.random.default_rng(6).standard_normal((4, *shape[1:])).astype(np.float32)
    session = ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"])
    want = np.concatenate([session.run(None, {"input": f[None]})[0] for f in x])
    got = wf.predict(x)
    step = wf.graph.tensors[wf.graph.outputs[0]].scale
    assert np.abs(got - want).max() <= 6 * step
    cos = (got * want).sum() / (np.linalg.norm(got) * np.linalg.norm(want))
    assert cos > 0.995


def test_calibrating_a_qdq_model_is_a_note_and_validate_evaluates_it(tmp_path):
    model, shape = ALL_NETS["concat"]()
    wf = Workflow(_ort_quantize(model, shape, tmp_path), processor="tiny_int8")
    wf.compile()
    before = {k: t.scale for k, t in wf.graph.tensors.items()}
    with pytest.warns(UserWarning, match="keeps them"):
        report = wf.calibrate(np.zeros((2, *wf.input_shape), np.float32), method="entropy")
    assert {k: t.scale for k, t in wf.graph.tensors.items()} == before
    assert "imported" in str(report)
    # the reference of validate() is the QDQ model itself (opset 17: converted for onnx.reference's Q/DQ)
    result = wf.validate(np.random.default_rng(7).standard_normal((2, *wf.input_shape)).astype(np.float32))
    assert result.outputs[wf.float_graph.outputs[0]].cosine > 0.995


def test_asymmetric_qdq_model_is_rejected_by_node(tmp_path):
    model, shape = ALL_NETS["concat"]()
    qdq = _ort_quantize(model, shape, tmp_path, symmetric=False)  # onnxruntime's default: uint8, zero point != 0
    first = next(n for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    with pytest.raises(CompileError, match=rf"node '{first.name}' \(QuantizeLinear\).*(uint8|zero point).*"
                                           "ActivationSymmetric"):
        Workflow(qdq, processor="tiny_int8")


def _pytorch_style() -> tuple[onnx.ModelProto, dict]:
    """What torch.onnx exports for a fake-quantized conv-relu-fc: float weights through QuantizeLinear ->
    DequantizeLinear (per channel, axis 0), activations in int8 Q/DQ pairs with zero point 0 (opset 19)."""
    rng = np.random.default_rng(9)
    w1 = rng.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.1, (5, 6 * 4 * 4)).astype(np.float32)
    s_w1 = (np.abs(w1).reshape(6, -1).max(axis=1) / 127).astype(np.float32)
    s_w2 = (np.abs(w2).max(axis=1) / 127).astype(np.float32)
    acts = {"x": 0.03, "conv": 0.05, "relu": 0.04, "pool": 0.04, "y": 0.08}
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(s_w1, "w1_scale"),
             numpy_helper.from_array(np.zeros(6, np.int8), "w1_zp"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(s_w2, "w2_scale"), numpy_helper.from_array(np.zeros(5, np.int8), "w2_zp"),
             numpy_helper.from_array(rng.normal(0, 0.1, 5).astype(np.float32), "b2"),
             numpy_helper.from_array(np.array(0, np.int8), "zp")]
    inits += [numpy_helper.from_array(np.array(s, np.float32), f"s_{k}") for k, s in acts.items()]
    nodes = []

    def qdq(x: str, key: str, out: str) -> str:
        nodes.append(helper.make_node("QuantizeLinear", [x, f"s_{key}", "zp"], [f"{out}_q"], name=f"{out}_Q"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{out}_q", f"s_{key}", "zp"], [out], name=f"{out}_DQ"))
        return out

    x = qdq("input", "x", "input_dq")
    for w in ("w1", "w2"):
        nodes.append(helper.make_node("QuantizeLinear", [w, f"{w}_scale", f"{w}_zp"], [f"{w}_q"], name=f"{w}_Q",
                                      axis=0))
        nodes.append(helper.make_node("DequantizeLinear", [f"{w}_q", f"{w}_scale", f"{w}_zp"], [f"{w}_dq"],
                                      name=f"{w}_DQ", axis=0))
    nodes.append(helper.make_node("Conv", [x, "w1_dq"], ["conv"], name="conv", kernel_shape=[3, 3], pads=[1] * 4))
    c = qdq("conv", "conv", "conv_dq")
    nodes.append(helper.make_node("Relu", [c], ["relu"], name="relu"))
    r = qdq("relu", "relu", "relu_dq")
    nodes.append(helper.make_node("MaxPool", [r], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]))
    p = qdq("pool", "pool", "pool_dq")
    nodes.append(helper.make_node("Flatten", [p], ["flat"], name="flatten", axis=1))
    nodes.append(helper.make_node("Gemm", ["flat", "w2_dq", "b2"], ["fc"], name="fc", transB=1))
    qdq("fc", "y", "logits")
    graph = helper.make_graph(nodes, "torch_qdq", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                  [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    expected = {"w1": np.clip(np.rint(w1 / s_w1.reshape(-1, 1, 1, 1)), -128, 127).astype(np.int8),
                "w2": np.clip(np.rint(w2 / s_w2.reshape(-1, 1)), -128, 127).astype(np.int8), "acts": acts}
    return model, expected


def test_pytorch_style_qdq_model(tmp_path):
    model, expected = _pytorch_style()
    wf = Workflow(model, processor="tiny_int8", target="ref")
    wf.compile()
    conv, fc = (layer for layer in wf.graph.layers if layer.op in ("conv", "fc"))
    np.testing.assert_array_equal(conv.quant.weight, expected["w1"])
    np.testing.assert_array_equal(fc.quant.weight, expected["w2"])
    assert wf.graph.tensors["input"].scale == pytest.approx(expected["acts"]["x"])
    assert wf.graph.tensors["logits"].scale == pytest.approx(expected["acts"]["y"])
    assert wf.graph.tensors[conv.output].scale == pytest.approx(expected["acts"]["relu"])  # ReLU fused into conv
    x = np.random.default_rng(10).uniform(-2, 2, (6, 3, 8, 8)).astype(np.float32)
    want = np.concatenate([float_evaluator(model).run(None, {"input": f[None]})[0] for f in x])
    got = wf.predict(x)
    # one requantization fewer (conv + ReLU fused) and fixed-point multipliers: a few output steps at most
    assert np.abs(got - want).max() <= 3 * expected["acts"]["y"]
    assert (got.argmax(axis=1) == want.argmax(axis=1)).mean() >= 5 / 6


def test_qdq_import_errors():
    model, _ = _pytorch_style()
    per_axis = onnx.ModelProto()
    per_axis.CopyFrom(model)
    node = next(n for n in per_axis.graph.node if n.name == "conv_dq_Q")
    node.input[1] = "w1_scale"
    node.input[2] = "w1_zp"
    node.attribute.extend([helper.make_attribute("axis", 1)])
    with pytest.raises(CompileError, match="node 'conv_dq_Q' .*per-axis activation scales"):
        load_onnx(per_axis)
    int8_reader = onnx.ModelProto()
    int8_reader.CopyFrom(model)
    int8_reader.graph.node.append(helper.make_node("Identity", ["relu_dq_q"], ["spy"], name="spy"))
    int8_reader.graph.output.append(helper.make_tensor_value_info("spy", TensorProto.INT8, [1, 6, 8, 8]))
    with pytest.raises(CompileError, match="node 'relu_dq_Q' .*read by node 'spy'"):
        load_onnx(int8_reader)
