"""ONNX front end, fusion and float reference: layer kinds and fusions per test network, shapes, values against
onnx.reference on the original model, and the errors a user sees."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from nets import ALL_NETS, NetBuilder
from onnx import TensorProto, helper

from dlproc.compiler.errors import CompileError, ModelError, OpsetError, ShapeError, UnsupportedOperatorError
from dlproc.compiler.float_ref import float_evaluator, run_float
from dlproc.compiler.frontend import FRONTEND_OPS, SUPPORTED_OPS, load_onnx
from dlproc.compiler.fusion import fuse
from dlproc.compiler.graph import HW_OPS, Graph

#: (op, fused activation) of every layer after fusion, in order.
EXPECTED = {
    "conv_kernels": [("conv", "relu"), ("conv", "leaky_relu"), ("conv", "clip"), ("conv", "relu"), ("conv", "none")],
    "conv_padding": [("conv", "relu")] * 4 + [("conv", "none")],
    "grouped_depthwise": [("conv", "relu"), ("conv", "clip"), ("conv", "none"), ("conv", "leaky_relu")],
    "bn_fold": [("conv", "none"), ("conv", "relu"), ("conv", "none"), ("maxpool", "none"), ("conv", "relu"),
                ("conv", "relu"), ("conv", "none")],
    "activations": [("conv", "leaky_relu"), ("conv", "clip"), ("conv", "clip"), ("conv", "none"),
                    ("maxpool", "none"), ("conv", "relu"), ("conv", "clip")],
    "pooling": [("conv", "relu"), ("maxpool", "none"), ("conv", "none"), ("host", "none"), ("conv", "relu"),
                ("maxpool", "none"), ("avgpool", "none"), ("avgpool", "none"), ("conv", "none"), ("host", "none"),
                ("gap", "none")],
    "residual": [("conv", "relu"), ("conv", "none"), ("conv", "none"), ("add", "relu"), ("conv", "relu"),
                 ("conv", "none"), ("add", "relu"), ("conv", "relu"), ("conv", "none"), ("conv", "none"),
                 ("add", "relu"), ("gap", "none"), ("fc", "none")],
    "concat": [("conv", "relu"), ("conv", "relu"), ("conv", "relu"), ("maxpool", "none"), ("concat", "none"),
               ("maxpool", "none"), ("conv", "leaky_relu"), ("conv", "none"), ("concat", "none"), ("conv", "none")],
    "classifier": [("conv", "relu"), ("maxpool", "none"), ("conv", "relu"), ("maxpool", "none"), ("fc", "relu"),
                   ("fc", "none"), ("host", "none")],
    "matmul_add": [("conv", "relu"), ("gap", "none"), ("fc", "relu"), ("fc", "none"), ("host", "none")],
    "large_conv": [("conv", "relu"), ("conv", "relu"), ("conv", "none")],
    "host_ops": [("conv", "relu"), ("host", "none"), ("conv", "relu"), ("host", "none"), ("conv", "none"),
                 ("host", "none")],
    "mlp": [("fc", "relu"), ("fc", "leaky_relu"), ("add", "none"), ("fc", "clip"), ("concat", "none"),
            ("fc", "none")],
    "unnamed_globalmax": [("conv", "relu"), ("conv", "none"), ("maxpool", "none"), ("fc", "none")],
    # the BatchNormalizations after the Add, the ReLU and the MaxPool become 1x1 depthwise convs
    "bn_opset13": [("conv", "relu"), ("conv", "none"), ("add", "none"), ("conv", "relu"), ("conv", "none"),
                   ("conv", "none"), ("maxpool", "none"), ("conv", "relu"), ("gap", "none"), ("fc", "none")],
    # conv3x3+relu, conv1x1/2+relu, conv5x5/2, add+relu, conv5x5+relu, conv1x1/3 (tests/nets.py loop_orders)
    "loop_orders": [("conv", "relu"), ("conv", "relu"), ("conv", "none"), ("add", "relu"), ("conv", "relu"),
                    ("conv", "none")],
}


@pytest.fixture(scope="module", params=sorted(ALL_NETS))
def net(request):
    model, shape = ALL_NETS[request.param]()
    return request.param, model, shape, load_onnx(model)


def _reference(model: onnx.ModelProto, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """onnx.reference on the original model, one sample at a time, for any tensor names."""
    ev = float_evaluator(model)
    runs = [ev.run(names, {"input": x[i:i + 1].astype(np.float32)}) for i in range(x.shape[0])]
    return {name: np.concatenate([r[j] for r in runs]) for j, name in enumerate(names)}


def _relerr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def test_every_test_net_is_checked():
    assert set(EXPECTED) == set(ALL_NETS)


def test_layer_kinds_and_fusions(net):
    name, _, _, graph = net
    assert [(la.op, la.act.kind) for la in graph.layers] == EXPECTED[name]
    for layer in graph.layers:
        assert layer.op in HW_OPS + ("host",)
        assert layer.target == ("host" if layer.op == "host" else "hw")
        if layer.target == "hw":
            assert len(layer.outputs) == 1 and not layer.host_reason and not layer.onnx_nodes
        else:
            assert layer.host_reason and layer.onnx_nodes


def test_shapes_match_onnx_shape_inference(net):
    _, model, shape, graph = net
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    onnx_shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        dims = vi.type.tensor_type.shape.dim
        onnx_shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
    assert graph.tensors[graph.inputs[0]].onnx_shape == shape
    for name, info in graph.tensors.items():
        if onnx_shapes.get(name):
            assert info.onnx_shape == onnx_shapes[name], name
        dims = list(info.onnx_shape[1:]) + [1] * 3
        assert info.shape == tuple(dims[:3]) or len(info.onnx_shape) > 4, name
    for layer in graph.layers:
        for v in layer.inputs + layer.outputs:
            assert v in graph.tensors, f"{layer.name}: {v}"


def test_float_reference_matches_onnx_reference(net):
    _, model, shape, graph = net
    x = np.random.default_rng(0).normal(size=(3,) + shape[1:]).astype(np.float32)
    values = run_float(graph, x)
    names = sorted(graph.tensors)
    ref = _reference(model, names, x)
    for name in names:
        assert values[name].shape == ref[name].shape, name
        assert _relerr(values[name], ref[name]) < 1e-4, name


def test_unfused_graph_computes_the_same(net):
    _, model, shape, graph = net
    raw = load_onnx(model, fuse=False)
    assert len(raw.layers) >= len(graph.layers)
    assert all(la.op in HW_OPS + FRONTEND_OPS + ("host",) for la in raw.layers)
    x = np.random.default_rng(1).normal(size=(2,) + shape[1:])
    a, b = run_float(raw, x), run_float(graph, x)
    for out in graph.outputs:
        assert _relerr(a[out], b[out]) < 1e-5  # folded weights are rounded to float32
    refused = fuse(graph)
    assert [(la.name, la.op, la.act.kind) for la in refused.layers] == [(la.name, la.op, la.act.kind)
                                                                        for la in graph.layers]


def test_model_from_file(tmp_path):
    model, _ = ALL_NETS["classifier"]()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert [la.op for la in load_onnx(path).layers] == [la.op for la in load_onnx(model).layers]
    assert [la.op for la in load_onnx(str(path)).layers] == [la.op for la in load_onnx(model).layers]


# ---------------------------------------------------------------------------------------------- details per net


def _layer(graph: Graph, name: str):
    return next(la for la in graph.layers if la.name == name)


def test_conv_geometry():
    g = load_onnx(ALL_NETS["conv_kernels"]()[0])
    assert [la.attrs["kernel"] for la in g.layers] == [(1, 1), (3, 3), (5, 5), (7, 7), (11, 11)]
    assert [la.attrs["stride"] for la in g.layers] == [(1, 1), (2, 2), (1, 1), (1, 1), (2, 2)]
    assert [la.weight.shape[0] for la in g.layers] == [5, 13, 20, 13, 5]
    assert g.layers[2].act.lo == 0 and g.layers[2].act.hi == 6
    assert g.layers[1].act.alpha == pytest.approx(0.1)
    g = load_onnx(ALL_NETS["conv_padding"]()[0])
    assert [la.attrs["pads"] for la in g.layers] == [(2, 2, 2, 2), (1, 1, 1, 1), (2, 2, 1, 1), (0, 0, 0, 0),
                                                     (0, 1, 2, 1)]
    assert g.layers[0].attrs["dilation"] == (2, 2)
    assert not np.any(g.layers[2].bias)  # conv without bias gets a zero bias
    g = load_onnx(ALL_NETS["grouped_depthwise"]()[0])
    assert [la.attrs["group"] for la in g.layers] == [4, 20, 1, 13]
    assert all("BatchNormalization" not in la.attrs.get("op_type", "") for la in g.layers)
    assert len(g.layers[0].nodes) == 3  # conv + BN + ReLU


def test_bn_and_affine_lowering():
    g = load_onnx(ALL_NETS["bn_fold"]()[0])
    first = g.layers[0]  # (x - mean) / std: one 1x1 depthwise conv
    assert first.attrs["group"] == 3 and first.attrs["kernel"] == (1, 1) and len(first.nodes) == 2
    np.testing.assert_allclose(first.weight.reshape(-1), 1 / np.array([0.2, 0.25, 0.3]), rtol=1e-6)
    np.testing.assert_allclose(first.bias, -np.array([0.4, 0.5, 0.6]) / np.array([0.2, 0.25, 0.3]), rtol=1e-6)
    standalone = g.layers[4]  # BN after a max-pool, then ReLU: one depthwise conv with ReLU
    assert standalone.attrs["group"] == 13 and standalone.act.kind == "relu" and len(standalone.nodes) == 2
    last = g.layers[6]  # BN after conv+ReLU cannot fold: depthwise conv
    assert last.attrs["group"] == 5 and last.name.startswith("batchnormalization")


def test_pooling_mapping():
    g = load_onnx(ALL_NETS["pooling"]()[0])
    mp1, host_mp, mp_ceil = g.layers[1], g.layers[3], g.layers[5]
    assert mp1.attrs["pads"] == (1, 1, 1, 1)  # after ReLU: exact on the processor
    assert host_mp.attrs["op_type"] == "MaxPool" and "negative" in host_mp.host_reason
    assert mp_ceil.attrs["pads"] == (0, 0, 0, 1)  # ceil_mode on 8x9 with 2x2/2: one extra column
    avg_pad, avg, host_avg = g.layers[6], g.layers[7], g.layers[9]
    assert avg_pad.attrs["count_include_pad"] == 1 and avg_pad.attrs["pads"] == (1, 1, 1, 1)
    assert avg.attrs["pads"] == (0, 0, 0, 0)
    assert "count_include_pad" in host_avg.host_reason
    g = load_onnx(ALL_NETS["unnamed_globalmax"]()[0])
    assert g.layers[2].attrs["kernel"] == (8, 9)
    assert [la.name for la in g.layers] == ["Conv_0", "Conv_2", "GlobalMaxPool_3", "Gemm_5"]


def test_fc_reads_the_feature_map():
    g = load_onnx(ALL_NETS["classifier"]()[0])
    fc1, fc2, soft = g.layers[4], g.layers[5], g.layers[6]
    assert g.tensors[fc1.inputs[0]].shape == (20, 4, 4) and fc1.weight.shape == (32, 320)
    assert any(n.startswith("flatten") for n in fc1.nodes) and any(n.startswith("dropout") for n in fc1.nodes)
    assert fc2.inputs == fc1.outputs and fc2.weight.shape == (10, 32)
    assert soft.attrs["op_type"] == "Softmax" and "Softmax" in soft.host_reason
    g = load_onnx(ALL_NETS["matmul_add"]()[0])
    fc1, fc2 = g.layers[2], g.layers[3]
    assert g.tensors[fc1.inputs[0]].shape == (20, 1, 1)
    assert any(n.startswith("add") for n in fc1.nodes) and any(n.startswith("add") for n in fc2.nodes)
    assert np.any(fc1.bias) and np.any(fc2.bias)


def test_host_layers_keep_their_nodes():
    g = load_onnx(ALL_NETS["host_ops"]()[0])
    hosts = [la for la in g.layers if la.op == "host"]
    assert [la.attrs["op_type"] for la in hosts] == ["LRN", "Transpose", "Sigmoid"]
    assert all(la.onnx_nodes[0].op_type == la.attrs["op_type"] for la in hosts)
    assert "LRN" in hosts[0].host_reason
    assert g.outputs == ["relu_9_out", "sigmoid_14_out"]


# ---------------------------------------------------------------------------------------------- fusion limits


def _single(builder: NetBuilder, outputs: list[str], opset: int = 17) -> Graph:
    return load_onnx(builder.model(outputs, opset=opset))


def test_no_fusion_when_the_conv_output_has_other_readers():
    b = NetBuilder("t", (1, 3, 8, 8))
    c = b.conv("input", 3, 5, 3)
    y = b.relu(b.bn(c, 5))
    g = _single(b, [c, y])  # the conv output is a network output: BN cannot fold
    assert [(la.op, la.act.kind) for la in g.layers] == [("conv", "none"), ("conv", "relu")]
    assert g.layers[1].attrs["group"] == 5
    b = NetBuilder("t", (1, 3, 8, 8))
    c = b.conv("input", 3, 5, 3)
    g = _single(b, [b.node("Add", [b.relu(c), c])])
    assert [(la.op, la.act.kind) for la in g.layers] == [("conv", "none"), ("conv", "relu"), ("add", "none")]


def test_identity_output_and_host_fallbacks():
    b = NetBuilder("t", (1, 3, 8, 8))
    y = b.node("Identity", [b.relu(b.conv("input", 3, 5, 3))])
    g = _single(b, [y])
    assert [la.op for la in g.layers] == ["conv"] and g.layers[0].output == y and g.outputs == [y]

    b = NetBuilder("t", (1, 3, 16, 16))
    x = b.maxpool("input", 3, 2, pad=1)  # may be negative: host
    x = b.node("AveragePool", [x], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    x = b.node("AveragePool", [x], kernel_shape=[2, 2], dilations=[2, 2])
    x = b.node("Softmax", [b.node("Flatten", [x])])  # a flatten that feeds no fc
    x = b.node("Reshape", [x, b.const(np.array([1, 2, 2, 3], np.int64))])
    g = _single(b, [x], opset=19)
    assert [la.op for la in g.layers] == ["host"] * 6
    reasons = [la.host_reason for la in g.layers]
    assert "negative" in reasons[0] and "ceil_mode" in reasons[1] and "dilated" in reasons[2]
    assert "flatten" in reasons[3] and "Softmax" in reasons[4] and "layout" in reasons[5]
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    ref = _reference(b.model([g.outputs[0]], opset=19), g.outputs, x)
    assert _relerr(run_float(g, x)[g.outputs[0]], ref[g.outputs[0]]) < 1e-5


def test_broadcast_add_and_mul_by_activation_run_on_the_host():
    b = NetBuilder("t", (1, 3, 8, 8))
    c = b.relu(b.conv("input", 3, 5, 3))
    pooled = b.node("GlobalAveragePool", [c])
    y = b.node("Add", [c, pooled])
    y = b.node("Mul", [y, c])
    y = b.node("Add", [y, b.const(np.ones((1, 5, 8, 8), np.float32) * np.arange(8, dtype=np.float32))])
    g = _single(b, [y])
    assert [la.op for la in g.layers] == ["conv", "gap", "host", "host", "host"]
    assert "broadcasting" in g.layers[2].host_reason and "per-channel" in g.layers[4].host_reason


# ---------------------------------------------------------------------------------------------- errors


def test_malformed_models(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelError, match="bad.onnx"):
        load_onnx(bad)
    with pytest.raises(ModelError, match="does not exist"):
        load_onnx(tmp_path / "missing.onnx")
    node = helper.make_node("Relu", ["undefined"], ["y"], name="r")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    with pytest.raises(ModelError, match="undefined"):
        load_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert issubclass(ModelError, CompileError)


def test_opset_range():
    model, _ = ALL_NETS["large_conv"]()
    for version in (9, 22):
        m = copy.deepcopy(model)
        m.opset_import[0].version = version
        with pytest.raises(OpsetError, match=f"opset {version}.*11 to 21"):
            load_onnx(m)


def test_batch_and_dynamic_shapes():
    for shape, match in (((2, 3, 8, 8), "batch size 2"), ((1, 3, "H", 8), "axis 2 is not static")):
        b = NetBuilder("t", shape)
        b.relu("input")
        with pytest.raises(ShapeError, match=match):
            load_onnx(b.model([b.nodes[-1].output[0]], output_shapes={b.nodes[-1].output[0]: list(shape)}))


def test_inconsistent_shapes_and_inputs():
    node = helper.make_node("Relu", ["input"], ["y"], name="r")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5, 4])])
    with pytest.raises(ShapeError, match="shape inference"):
        load_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    add = helper.make_node("Add", ["input", "other"], ["y"], name="a")
    graph = helper.make_graph([add], "g", [helper.make_tensor_value_info(v, TensorProto.FLOAT, [1, 3, 4, 4])
                                           for v in ("input", "other")],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    with pytest.raises(ShapeError, match="2 network inputs"):
        load_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    cast = helper.make_node("Cast", ["input"], ["y"], name="c", to=TensorProto.FLOAT)
    graph = helper.make_graph([cast], "g", [helper.make_tensor_value_info("input", TensorProto.UINT8, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    with pytest.raises(ModelError, match="UINT8.*float32"):
        load_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_unsupported_operators():
    b = NetBuilder("t", (1, 3, 8, 8))
    b.nodes.append(helper.make_node("FusedConv", ["input"], ["y"], name="custom_1", domain="com.microsoft"))
    graph = helper.make_graph(b.nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft",
                                                                                                     1)])
    with pytest.raises(UnsupportedOperatorError, match="custom_1.*com.microsoft.FusedConv.*Conv") as info:
        load_onnx(model)
    assert info.value.node == "custom_1" and "Conv" in info.value.supported

    then = helper.make_graph([helper.make_node("Identity", ["input"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 3, 8, 8])])
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    node = helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then, else_branch=then)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])], [cond])
    with pytest.raises(UnsupportedOperatorError, match="branch.*If.*control flow"):
        load_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_supported_ops_listed():
    for op in ("Conv", "Gemm", "MatMul", "Relu", "LeakyRelu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
               "BatchNormalization", "Add", "Concat", "Flatten", "Reshape", "Dropout", "Identity"):
        assert op in SUPPORTED_OPS
