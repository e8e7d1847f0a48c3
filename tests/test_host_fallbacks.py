"""Host fallbacks: the numpy kernels of compiler.float_ref.FLOAT_OPS against their formulas (and against
onnx.reference's expansion of the schema's function body where it has one); the front end turns every operator
the float evaluator executes into a host layer; MobileNet v3 / EfficientNet style blocks compile and predict on
the golden model close to the float evaluator."""

import numpy as np
import onnx
import pytest
from edge_nets import EDGE_NETS
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from dlproc.compiler.errors import UnsupportedOperatorError
from dlproc.compiler.float_ref import float_evaluator, host_executable
from dlproc.compiler.frontend import load_onnx
from dlproc.runtime.workflow import Workflow

RNG = np.random.default_rng(5)
X = (RNG.standard_normal((2, 6, 5, 5)) * 4).astype(np.float32)


def _one_node(op: str, opset: int, consts: dict | None = None, shape: tuple = X.shape, **attrs) -> onnx.ModelProto:
    consts = consts or {}
    node = helper.make_node(op, ["x", *consts], ["y"], **attrs)
    graph = helper.make_graph([node], op, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_empty_tensor_value_info("y")],
                              [onnx.numpy_helper.from_array(v, k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _batch1(op: str, opset: int, **attrs) -> onnx.ModelProto:
    """A one-node model for the front end: batch 1, the output typed by shape inference."""
    model = _one_node(op, opset, shape=(1, *X.shape[1:]), **attrs)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    model.graph.output[0].CopyFrom(next(v for v in inferred.graph.value_info if v.name == "y"))
    return model


def _group_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, groups: int, eps: float) -> np.ndarray:
    out = np.empty(x.shape, np.float64)
    per = x.shape[1] // groups
    for n in range(x.shape[0]):
        for g in range(groups):
            block = x[n, g * per:(g + 1) * per].astype(np.float64)
            out[n, g * per:(g + 1) * per] = (block - block.mean()) / np.sqrt(block.var() + eps)
    return out * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)


SCALE = RNG.uniform(0.5, 1.5, 6).astype(np.float32)
BIAS = RNG.normal(0, 0.3, 6).astype(np.float32)
CASES = {
    "HardSwish": (_one_node("HardSwish", 14), X * np.minimum(np.maximum(X + 3, 0), 6) / 6),
    "Mish": (_one_node("Mish", 18), X * np.tanh(np.log1p(np.exp(X.astype(np.float64))))),
    "GlobalLpPool": (_one_node("GlobalLpPool", 17, p=3),
                     (np.abs(X.astype(np.float64)) ** 3).sum(axis=(2, 3), keepdims=True) ** (1 / 3)),
    "GroupNormalization21": (_one_node("GroupNormalization", 21, {"s": SCALE, "b": BIAS}, num_groups=3,
                                       epsilon=1e-3), _group_norm(X, SCALE, BIAS, 3, 1e-3)),
    "GroupNormalization18": (_one_node("GroupNormalization", 18, {"s": SCALE[:3], "b": BIAS[:3]}, num_groups=3,
                                       epsilon=1e-3), _group_norm(X, np.repeat(SCALE[:3], 2),
                                                                  np.repeat(BIAS[:3], 2), 3, 1e-3)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_float_op_matches_its_formula(case):
    model, want = CASES[case]
    got = float_evaluator(model).run(None, {"x": X})[0]
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["HardSwish", "Mish", "GroupNormalization18"])
def test_float_op_matches_the_function_body_expansion(case):
    """onnx.reference alone (no FLOAT_OPS) expands these operators' function bodies: an independent evaluation."""
    model, _ = CASES[case]
    want = ReferenceEvaluator(model).run(None, {"x": X})[0]
    np.testing.assert_allclose(float_evaluator(model).run(None, {"x": X})[0], want, rtol=1e-5, atol=1e-5)


def test_host_executable():
    for op, opset in [("HardSwish", 14), ("Mish", 18), ("Gelu", 20), ("HardSigmoid", 17), ("GlobalLpPool", 11),
                      ("GroupNormalization", 21), ("Sigmoid", 17), ("LRN", 11)]:
        assert host_executable(op, opset) is None, op
    assert "no operator 'Gelu' at opset 17" in host_executable("Gelu", 17)
    assert "no operator 'NoSuchOp'" in host_executable("NoSuchOp", 17)


@pytest.mark.parametrize("op, opset, attrs", [("HardSwish", 14, {}), ("Mish", 18, {}), ("Gelu", 20, {}),
                                              ("Gelu", 21, {"approximate": "tanh"}), ("GlobalLpPool", 17, {})])
def test_frontend_makes_host_layers_of_function_operators(op, opset, attrs):
    graph = load_onnx(_batch1(op, opset, **attrs))
    assert [(la.op, la.attrs.get("op_type")) for la in graph.layers] == [("host", op)]


def test_frontend_still_refuses_custom_domains():
    model = _batch1("HardSwish", 14)
    model.graph.node[0].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedOperatorError, match="custom domains"):
        load_onnx(model)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("netname", list(EDGE_NETS))
@pytest.mark.parametrize("processor", ["tiny_int8", "tiny_fp32"])
def test_edge_block_predicts_like_the_float_evaluator(netname, processor):
    model, shape = EDGE_NETS[netname]()
    rng = np.random.default_rng(len(netname))
    wf = Workflow(model, processor=processor, target="ref")
    if processor == "tiny_int8":
        wf.calibrate(rng.standard_normal((16, *shape[1:])).astype(np.float32))
    net = wf.compile()
    assert any(layer.target == "hw" for layer in net.layers)
    x = rng.standard_normal((4, *shape[1:])).astype(np.float32)
    got = np.asarray(wf.predict(x), np.float64)
    reference = float_evaluator(model)
    want = np.concatenate([reference.run(None, {"input": f[None]})[0] for f in x]).astype(np.float64)
    if processor == "tiny_int8":
        assert _cosine(got, want) >= 0.99
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("size", [3, 5])
def test_lrn_matches_onnxruntime_and_the_specification(size):
    """onnx.reference's LRN normalizes only channel 0 (its loop runs over the batch axis); FLOAT_OPS corrects it."""
    ort = pytest.importorskip("onnxruntime")
    x = (RNG.standard_normal((1, 7, 4, 5)) * 2).astype(np.float32)
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=0.5, beta=0.75, bias=2.0)
    graph = helper.make_graph([node], "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    got = float_evaluator(model).run(None, {"x": x})[0]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    xs = x.astype(np.float64)
    formula = np.empty_like(xs)
    for c in range(7):
        window = xs[:, max(0, c - (size - 1) // 2):min(7, c + size // 2 + 1)]
        formula[:, c] = xs[:, c] / (2.0 + 0.5 / size * (window ** 2).sum(axis=1)) ** 0.75
    np.testing.assert_allclose(got, formula, rtol=1e-5, atol=1e-6)
