"""The project's float evaluator (``compiler/float_ref.float_evaluator``) against onnxruntime and numpy.

``onnx.reference`` in the onnx release we install runs a one-output BatchNormalization of opsets 9-13 in training
mode (onnx/onnx pull request 8442); the evaluator corrects it. BatchNormalization is checked alone at opsets 7, 9,
13, 14 and 15 (inference with one output; training with five outputs before opset 14) against onnxruntime and the
numpy formula, then whole networks with BatchNormalization at opset 13: a hand-built residual network
(tests/nets.py ``bn_opset13``) and one ONNX zoo architecture (tests/zoo.py), end to end against onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from nets import ALL_NETS, NetBuilder
from onnx import TensorProto, helper, numpy_helper
from zoo import zoo_model

from dlproc.compiler.float_ref import float_evaluator

ort = pytest.importorskip("onnxruntime")

#: Relative error allowed (of the output's largest magnitude): float32 rounding, far below a 1% error.
RTOL = 1e-4
EPSILON = 1e-3
OUTPUTS = ["y", "running_mean", "running_var", "saved_mean", "saved_inv_std"]


def _relerr(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-12))


def _onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str] | None = None):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(names, feeds)


@pytest.fixture(scope="module")
def bn_data():
    """A batch of 3 far from the running statistics (so blending in the batch's statistics shows), and the
    parameters ``scale, bias, mean, var`` of 5 channels."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 5, 6, 7)) * 2.0 + 1.5).astype(np.float32)
    params = [rng.uniform(0.5, 1.5, 5), rng.normal(0, 0.5, 5), rng.normal(0, 0.5, 5), rng.uniform(0.5, 1.5, 5)]
    return x, [p.astype(np.float32) for p in params]


def _bn_model(opset: int, outputs: int, params: list[np.ndarray], shape: tuple[int, ...]) -> onnx.ModelProto:
    names = ["scale", "bias", "mean", "var"]
    attrs = {"training_mode": 1} if opset >= 14 and outputs > 1 else {}
    node = helper.make_node("BatchNormalization", ["x", *names], OUTPUTS[:outputs], epsilon=EPSILON, momentum=0.8,
                            **attrs)
    graph = helper.make_graph([node], "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, shape if i == 0 else [shape[1]])
                               for i, o in enumerate(node.output)],
                              [numpy_helper.from_array(p, n) for p, n in zip(params, names, strict=True)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("opset", [7, 9, 13, 14, 15])
def test_batchnorm_inference(opset, bn_data):
    """One output: ``scale * (x - mean) / sqrt(var + epsilon) + bias`` with the running statistics."""
    x, params = bn_data
    scale, bias, mean, var = (p.astype(np.float64).reshape(1, -1, 1, 1) for p in params)
    formula = scale * (x.astype(np.float64) - mean) / np.sqrt(var + EPSILON) + bias
    model = _bn_model(opset, 1, params, x.shape)
    (got,) = float_evaluator(model).run(None, {"x": x})
    (want,) = _onnxruntime(model, {"x": x})
    assert got.dtype == np.float32
    assert _relerr(got, formula) < RTOL
    assert _relerr(got, want) < RTOL
    assert _relerr(want, formula) < RTOL  # the two references agree with each other too


@pytest.mark.parametrize("opset", [7, 9, 13])
def test_batchnorm_training_outputs_before_opset_14(opset, bn_data):
    """Five outputs: the batch's statistics normalize; running statistics updated with momentum; saved mean and
    inverse standard deviation (onnxruntime's convention)."""
    x, params = bn_data
    scale, bias, mean, var = (p.astype(np.float64) for p in params)
    x64 = x.astype(np.float64)
    batch_mean, batch_var = x64.mean(axis=(0, 2, 3)), x64.var(axis=(0, 2, 3))
    inv_std = 1 / np.sqrt(batch_var + EPSILON)
    c = (1, -1, 1, 1)
    formula = [scale.reshape(c) * (x64 - batch_mean.reshape(c)) * inv_std.reshape(c) + bias.reshape(c),
               0.8 * mean + 0.2 * batch_mean, 0.8 * var + 0.2 * batch_var, batch_mean, inv_std]
    model = _bn_model(opset, 5, params, x.shape)
    got = float_evaluator(model).run(None, {"x": x})
    want = _onnxruntime(model, {"x": x})
    assert len(got) == len(want) == 5
    for name, g, w, f in zip(OUTPUTS, got, want, formula, strict=True):
        assert _relerr(g, f) < RTOL, name
        assert _relerr(g, w) < RTOL, name


def test_residual_network_at_opset_13():
    """A residual network with folded and unfolded BatchNormalizations at opset 13 (tests/nets.py), every
    BatchNormalization output and the network output against onnxruntime."""
    model, shape = ALL_NETS["bn_opset13"]()
    assert model.opset_import[0].version == 13
    names = [n.output[0] for n in model.graph.node if n.op_type == "BatchNormalization"] + [model.graph.output[0].name]
    assert len(names) > 5
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names[:-1])
    x = np.random.default_rng(1).standard_normal((2, *shape[1:])).astype(np.float32)
    evaluator = float_evaluator(model)
    for frame in x:
        feeds = {"input": frame[None]}
        for name, got, want in zip(names, evaluator.run(names, feeds), _onnxruntime(probe, feeds, names), strict=True):
            assert _relerr(got, want) < RTOL, name


def test_zoo_network_end_to_end():
    """ShuffleNet from the onnx wheel's zoo (opset 9 converted to 13; 49 BatchNormalizations): the logits (input of
    the final Softmax, which saturates with random weights) against onnxruntime."""
    model = zoo_model("shufflenet")
    assert model.opset_import[0].version == 13
    assert sum(n.op_type == "BatchNormalization" for n in model.graph.node) == 49
    logits = next(n for n in reversed(model.graph.node) if n.op_type == "Softmax").input[0]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_empty_tensor_value_info(logits))
    name = model.graph.input[0].name
    x = {name: np.random.default_rng(2).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    (got,) = float_evaluator(model).run([logits], x)
    (want,) = _onnxruntime(probe, x, [logits])
    assert _relerr(got, want) < RTOL



def test_host_layer_batchnorm_through_the_driver_and_run_float():
    """A five-output (training-mode) BatchNormalization at opset 13 runs on the host: the driver (fp32 golden
    model) and :func:`run_float` evaluate it through the float evaluator; both match onnxruntime within 1e-4."""
    from dlproc.compiler.float_ref import run_float
    from dlproc.runtime.workflow import Workflow

    b = NetBuilder("host_bn", (1, 4, 8, 8), seed=16)
    params = [b.rng.uniform(0.5, 1.5, 8), b.rng.normal(0, 0.1, 8), b.rng.normal(0, 0.2, 8), b.rng.uniform(0.5, 1.5, 8)]
    x = b.node("BatchNormalization", [b.conv("input", 4, 8, 3)] + [b.const(p.astype(np.float32), "bn") for p in params],
               n_out=5)
    model = b.model([b.conv(b.relu(x), 8, 5, 3)], opset=13)
    wf = Workflow(model, processor="tiny_fp32", target="ref")
    net = wf.compile()
    assert [layer.target for layer in net.layers] == ["hw", "host", "hw", "hw"]
    frames = np.random.default_rng(4).standard_normal((2, 4, 8, 8)).astype(np.float32)
    want = np.concatenate([_onnxruntime(model, {"input": f[None]})[0] for f in frames])
    assert _relerr(wf.predict(frames), want) < RTOL
    floats = np.concatenate([run_float(wf.float_graph, f[None])[wf.float_graph.outputs[0]] for f in frames])
    assert _relerr(floats, want) < RTOL
