"""Real data: a small CNN trained here on scikit-learn's handwritten digits keeps its accuracy in int8.

The fixture trains ``conv 3x3 x 8 + ReLU + maxpool 2x2 + fc 10`` with a numpy trainer (manual backpropagation, Adam,
seeded, a few seconds) on 8x8 digit images scaled to [-1, 1], exports it with ``onnx.helper`` at opset 13 (the
scaling is a BatchNormalization that nothing can fold: it becomes a 1x1 depthwise conv) and checks the trainer's own
float forward pass against the project's float evaluator and validate's float outputs, within 1e-4. The int8
network then runs on the golden model ("ref") and on the RTL in Verilator ("sim"); its top-1 accuracy on the
held-out images must stay within one percentage point of float, and the RTL's outputs must equal the golden model's.
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dlproc.runtime.workflow import Workflow

SEED = 0
TEST_IMAGES = 300  #: held out; the sim runs them all
SIM_IMAGES = 300
CALIBRATION_IMAGES = 200
EPOCHS = 12
#: Input scaling ``(x - 0.5) / sqrt(0.25 + eps)``: [0, 1] to about [-1, 1], a BatchNormalization in the model.
BN_MEAN, BN_VAR, BN_EPS = 0.5, 0.25, 1e-5
#: Relative error (of the largest logit) allowed between float evaluations: catches a 1% error.
RTOL = 1e-4


def _im2col(x: np.ndarray) -> np.ndarray:
    """``[N, 1, 8, 8]`` -> ``[N, 9, 64]``: the 3x3 taps (pad 1) of every pixel."""
    xp = np.pad(x[:, 0], ((0, 0), (1, 1), (1, 1)))
    return np.stack([xp[:, ky:ky + 8, kx:kx + 8].reshape(x.shape[0], 64) for ky in range(3) for kx in range(3)],
                    axis=1)


def _forward(params: dict, x: np.ndarray) -> tuple[np.ndarray, dict]:
    cols = _im2col((x - BN_MEAN) / np.sqrt(BN_VAR + BN_EPS))
    z = np.einsum("ok,nkp->nop", params["w1"], cols) + params["b1"][None, :, None]  # [N, 8, 64]
    a = np.maximum(z, 0).reshape(-1, 8, 4, 2, 4, 2)
    pooled = a.max(axis=(3, 5))  # [N, 8, 4, 4]
    flat = pooled.reshape(x.shape[0], -1)
    logits = flat @ params["w2"].T + params["b2"]
    return logits, {"cols": cols, "z": z, "a": a, "pooled": pooled, "flat": flat}


def _train(x: np.ndarray, y: np.ndarray) -> dict:
    """Adam on softmax cross-entropy, minibatches of 32, manual backpropagation."""
    rng = np.random.default_rng(SEED)
    params = {"w1": rng.normal(0, np.sqrt(2 / 9), (8, 9)), "b1": np.zeros(8),
              "w2": rng.normal(0, np.sqrt(2 / 128), (10, 128)), "b2": np.zeros(10)}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    step, lr, b1, b2 = 0, 0.01, 0.9, 0.999
    for _ in range(EPOCHS):
        order = rng.permutation(x.shape[0])
        for i in range(0, x.shape[0], 32):
            idx = order[i:i + 32]
            xb, yb, n = x[idx], y[idx], len(idx)
            logits, c = _forward(params, xb)
            prob = np.exp(logits - logits.max(axis=1, keepdims=True))
            prob /= prob.sum(axis=1, keepdims=True)
            prob[np.arange(n), yb] -= 1.0
            dlogits = prob / n
            grads = {"w2": dlogits.T @ c["flat"], "b2": dlogits.sum(axis=0)}
            dpooled = (dlogits @ params["w2"]).reshape(n, 8, 4, 1, 4, 1)
            winner = c["a"] == c["pooled"].reshape(n, 8, 4, 1, 4, 1)  # ties share the gradient (rare, harmless)
            dz = (dpooled * winner).reshape(n, 8, 64) * (c["z"] > 0)
            grads["w1"] = np.einsum("nop,nkp->ok", dz, c["cols"])
            grads["b1"] = dz.sum(axis=(0, 2))
            step += 1
            for k, g in grads.items():
                m[k] = b1 * m[k] + (1 - b1) * g
                v[k] = b2 * v[k] + (1 - b2) * g * g
                params[k] -= lr * (m[k] / (1 - b1 ** step)) / (np.sqrt(v[k] / (1 - b2 ** step)) + 1e-8)
    return params


def _to_onnx(params: dict) -> onnx.ModelProto:
    bn = {name: numpy_helper.from_array(np.array([value], np.float32), name)
          for name, value in (("bn_scale", 1.0), ("bn_bias", 0.0), ("bn_mean", BN_MEAN), ("bn_var", BN_VAR))}
    inits = list(bn.values()) + [
             numpy_helper.from_array(params["w1"].reshape(8, 1, 3, 3).astype(np.float32), "w1"),
             numpy_helper.from_array(params["b1"].astype(np.float32), "b1"),
             numpy_helper.from_array(params["w2"].astype(np.float32), "w2"),
             numpy_helper.from_array(params["b2"].astype(np.float32), "b2")]
    nodes = [helper.make_node("BatchNormalization", ["image", *bn], ["scaled"], name="scale", epsilon=BN_EPS),
             helper.make_node("Conv", ["scaled", "w1", "b1"], ["conv"], name="conv", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
             helper.make_node("MaxPool", ["relu"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
             helper.make_node("Gemm", ["flat", "w2", "b2"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "digits_cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                   ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]  # [1797, 1, 8, 8] in [0, 1]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(y))
    x, y = x[order], y[order]
    x_train, y_train, x_test, y_test = x[:-TEST_IMAGES], y[:-TEST_IMAGES], x[-TEST_IMAGES:], y[-TEST_IMAGES:]
    start = time.perf_counter()
    params = _train(x_train.astype(np.float64), y_train)
    print(f"trained in {time.perf_counter() - start:.1f} s")
    own_logits = _forward(params, x_test.astype(np.float64))[0]
    own = (own_logits.argmax(axis=1) == y_test).mean()
    return {"model": _to_onnx(params), "x_train": x_train, "x_test": x_test, "y_test": y_test, "own_accuracy": own,
            "own_logits": own_logits}


def _relerr(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())


def test_trained_network_is_a_real_classifier(digits):
    """The exported model computes what the trainer computed, and it has learnt the task."""
    from dlproc.compiler.float_ref import float_evaluator

    logits = float_evaluator(digits["model"]).run(None, {"image": digits["x_test"]})[0]
    assert _relerr(logits, digits["own_logits"]) < RTOL
    onnx_accuracy = (logits.argmax(axis=1) == digits["y_test"]).mean()
    assert onnx_accuracy == pytest.approx(digits["own_accuracy"], abs=1 / TEST_IMAGES)
    assert onnx_accuracy > 0.9


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_int8_accuracy_on_the_golden_model(digits, method):
    wf = Workflow(digits["model"], processor="tiny_int8", target="ref")
    wf.calibrate(digits["x_train"][:CALIBRATION_IMAGES], method=method)
    result = wf.validate(digits["x_test"], digits["y_test"])
    print(result)
    assert _relerr(result.float_outputs["logits"], digits["own_logits"]) < RTOL
    assert result.float_accuracy == pytest.approx(digits["own_accuracy"], abs=1 / TEST_IMAGES)
    assert abs(result.int8_accuracy - result.float_accuracy) <= 0.01
    assert result.agreement >= 0.98
    assert result.outputs["logits"].sqnr_db > 20


def test_int8_accuracy_on_the_rtl(digits):
    """The same on the RTL (Verilator): accuracy within a point of float, outputs equal to the golden model's."""
    x, y = digits["x_test"][:SIM_IMAGES], digits["y_test"][:SIM_IMAGES]
    ref = Workflow(digits["model"], processor="tiny_int8", target="ref")
    ref.calibrate(digits["x_train"][:CALIBRATION_IMAGES])
    golden = ref.predict(x)
    with Workflow(digits["model"], processor="tiny_int8", target="sim") as wf:
        wf.calibrate(digits["x_train"][:CALIBRATION_IMAGES])
        wf.deploy()  # builds the simulator once (cached), outside the timing
        start = time.perf_counter()
        result = wf.validate(x, y)
        elapsed = time.perf_counter() - start
    print(result)
    print(f"{SIM_IMAGES} images on the RTL in {elapsed:.1f} s")
    np.testing.assert_array_equal(result.int8_outputs["logits"], golden)
    assert abs(result.int8_accuracy - result.float_accuracy) <= 0.01
