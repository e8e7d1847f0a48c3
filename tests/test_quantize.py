"""Calibration, int8 quantization and the integer reference: parameter ranges, shared scales, the integer rules,
and the accuracy of every test network (cosine similarity of the dequantized outputs to the float reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from int_reference import dequantize, run_int_reference
from nets import ALL_NETS, NetBuilder

from dlproc.compiler.calibrate import AbsHistogram, calibrate
from dlproc.compiler.errors import CompileError
from dlproc.compiler.float_ref import conv2d, run_float
from dlproc.compiler.frontend import load_onnx
from dlproc.compiler.graph import Activation, fixed_point_multiplier
from dlproc.compiler.quantize import activation_clamp, quantize, quantize_tensor, scale_groups

CALIBRATION_SAMPLES = 32
TEST_SAMPLES = 4


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module", params=sorted(ALL_NETS))
def quantized(request):
    model, shape = ALL_NETS[request.param]()
    graph = load_onnx(model)
    rng = np.random.default_rng(100)
    stats = calibrate(graph, rng.normal(size=(CALIBRATION_SAMPLES,) + shape[1:]))
    return request.param, graph, stats, quantize(graph, stats), rng.normal(size=(TEST_SAMPLES,) + shape[1:])


# ---------------------------------------------------------------------------------------------- fixed point


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1e-7, max_value=3e4, allow_nan=False, allow_infinity=False))
def test_fixed_point_multiplier_precision(real):
    mult, shift = fixed_point_multiplier(real)
    assert 1 << 14 <= mult < 1 << 15
    assert 0 <= shift <= 63
    assert abs(mult * 2.0 ** -shift - real) <= real * 2.0 ** -14


def test_fixed_point_multiplier_edges():
    assert fixed_point_multiplier(0.0) == (0, 0)
    mult, shift = fixed_point_multiplier(-0.3)
    assert mult < 0 and fixed_point_multiplier(0.3) == (-mult, shift)
    assert fixed_point_multiplier(1.0) == (1 << 14, 14)
    mult, shift = fixed_point_multiplier(2.0 ** -60)  # tiny: the shift saturates, the multiplier shrinks
    assert shift == 63 and mult == 8
    with pytest.raises(ValueError):
        fixed_point_multiplier(1e6)
    with pytest.raises(ValueError):
        fixed_point_multiplier(float("nan"))
    mult, shift = fixed_point_multiplier(0.9999999)  # rounding carries out of the mantissa
    assert (mult, shift) == (1 << 14, 14)


# ---------------------------------------------------------------------------------------------- host rules


def test_host_quantization_rounds_half_to_even_and_clamps():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 200.0, -200.0, 126.6])
    assert quantize_tensor(x, 1.0).tolist() == [0, 2, 2, 0, -2, 127, -128, 127]
    assert quantize_tensor(x, 1.0).dtype == np.int8


def test_activation_clamps():
    assert activation_clamp(Activation("relu"), 0.1) == (0, 127)
    assert activation_clamp(Activation("clip", lo=0.0, hi=6.0), 6 / 127) == (0, 127)
    assert activation_clamp(Activation("clip", lo=0.0, hi=6.0), 0.1) == (0, 60)
    assert activation_clamp(Activation("clip", lo=-1.0, hi=1.0), 0.02) == (-50, 50)
    assert activation_clamp(Activation("clip", hi=2.0), 0.1) == (-128, 20)
    assert activation_clamp(Activation("leaky_relu", alpha=0.1), 0.1) == (-128, 127)


# ---------------------------------------------------------------------------------------------- calibration


def test_calibration_statistics():
    model, shape = ALL_NETS["residual"]()
    graph = load_onnx(model)
    x = np.random.default_rng(5).normal(size=(10,) + shape[1:])
    minmax = calibrate(graph, x, batch_size=3)
    values = run_float(graph, x)
    assert set(minmax) == set(graph.tensors)
    for name, (lo, hi) in minmax.items():
        assert lo == pytest.approx(values[name].min()) and hi == pytest.approx(values[name].max())
    batched = calibrate(graph, iter([x[:4], x[4:]]))
    assert all(batched[k] == pytest.approx(v) for k, v in minmax.items())
    pct = calibrate(graph, x, method="percentile", percentile=99.0)
    for name in minmax:
        assert minmax[name][0] <= pct[name][0] <= pct[name][1] <= minmax[name][1]
    entropy = calibrate(graph, x, method="entropy")
    for name in minmax:
        assert minmax[name][0] <= entropy[name][0] <= entropy[name][1] <= minmax[name][1]
    with pytest.raises(ValueError, match="method"):
        calibrate(graph, x, method="kl")


def test_abs_histogram_percentile():
    rng = np.random.default_rng(0)
    hist = AbsHistogram(bins=2048)
    data = [rng.normal(size=1000) * s for s in (0.1, 1.0, 10.0)]  # the range grows twice
    for d in data:
        hist.add(d)
    mags = np.abs(np.concatenate(data))
    assert hist.counts.sum() == mags.size
    ordered = np.sort(mags)
    for q in (50.0, 99.0, 99.9):
        value = ordered[math.ceil(q / 100 * mags.size) - 1]  # the order statistic; the result is its bin's top edge
        assert 0 <= hist.percentile(q) - value <= hist.top / hist.bins


# ---------------------------------------------------------------------------------------------- parameters


def test_quantized_parameters(quantized):
    name, graph, _, q, _ = quantized
    for info in q.tensors.values():
        assert info.scale is not None and info.scale > 0
    for group in scale_groups(q):
        assert len({q.tensors[v].scale for v in group}) == 1
    for layer in q.layers:
        if layer.target == "host":
            assert layer.quant is None
            continue
        rq, channels = layer.quant.requant, q.tensors[layer.output].channels
        for arr in (rq.bias, rq.mult_pos, rq.mult_neg, rq.shift):
            assert arr.shape == (channels,)
        assert rq.bias.dtype == np.int32
        assert np.all(np.abs(rq.mult_pos) < 1 << 15) and np.all(np.abs(rq.mult_neg) < 1 << 15)
        assert np.all((0 <= rq.shift) & (rq.shift <= 63))
        assert -128 <= rq.lo <= rq.hi <= 127
        if layer.op in ("conv", "fc"):
            assert layer.quant.weight.dtype == np.int8 and layer.quant.weight.shape == layer.weight.shape
            assert np.abs(layer.quant.weight.astype(int)).max() == 127
            assert layer.quant.weight_scale.shape == (channels,)
        if layer.act.kind == "relu":
            assert rq.lo == 0
        if layer.op in ("avgpool", "gap"):
            assert layer.quant.input_mults == [1]
        if layer.op == "add":
            assert len(layer.quant.input_mults) == 2 and max(map(abs, layer.quant.input_mults)) <= 32767
            assert max(map(abs, layer.quant.input_mults)) >= 1 << 13  # uses the int16 range
        if layer.op in ("maxpool", "concat"):
            assert np.all(rq.mult_pos == 1) and np.all(rq.shift == 0) and not np.any(rq.bias)
            assert all(q.tensors[v].scale == q.tensors[layer.output].scale for v in layer.inputs)
    assert all(la.quant is None for la in graph.layers)  # quantize works on a copy


def test_requantization_ratios():
    model, _ = ALL_NETS["conv_kernels"]()
    graph = load_onnx(model)
    stats = calibrate(graph, np.random.default_rng(0).normal(size=(8, 3, 15, 17)))
    q = quantize(graph, stats)
    for layer in q.layers:
        s_in, s_out = q.tensors[layer.inputs[0]].scale, q.tensors[layer.output].scale
        rq = layer.quant.requant
        ratio = s_in * layer.quant.weight_scale.astype(np.float64) / s_out
        np.testing.assert_allclose(rq.mult_pos * 2.0 ** -rq.shift, ratio, rtol=2.0 ** -14)
        if layer.act.kind == "leaky_relu":
            np.testing.assert_allclose(rq.mult_neg * 2.0 ** -rq.shift, ratio * layer.act.alpha, rtol=2.0 ** -10)
        bias = layer.bias / (s_in * layer.quant.weight_scale.astype(np.float64))
        np.testing.assert_allclose(rq.bias, bias, atol=0.5 + 1e-6)
    per_tensor = quantize(graph, stats, per_channel=False)
    assert all(len(set(la.quant.weight_scale.tolist())) == 1 for la in per_tensor.layers)
    with pytest.raises(CompileError, match="no calibration statistics"):
        quantize(graph, {})


def test_add_with_leaky_relu():
    b = NetBuilder("t", (1, 5, 6, 6))
    x = b.conv("input", 5, 5, 3)
    y = b.leaky(b.node("Add", [x, b.conv(x, 5, 5, 3)]), 0.25)
    graph = load_onnx(b.model([y]))
    stats = calibrate(graph, np.random.default_rng(0).normal(size=(8, 5, 6, 6)))
    add = quantize(graph, stats).layers[-1]
    assert add.op == "add" and add.act.kind == "leaky_relu"
    rq = add.quant.requant
    assert np.all(rq.mult_pos == 1 << 14) and np.all(rq.mult_neg == 1 << 12)


# ---------------------------------------------------------------------------------------------- integer rules


def test_integer_reference_conv_against_loops():
    """A grouped, strided, dilated, asymmetrically padded conv with leaky ReLU, computed with explicit loops."""
    b = NetBuilder("t", (1, 4, 7, 9), seed=3)
    y = b.leaky(b.conv("input", 4, 6, 3, stride=2, dilation=2, group=2, pad=[1, 2, 0, 1]), 0.3)
    graph = load_onnx(b.model([y]))
    rng = np.random.default_rng(1)
    q = quantize(graph, calibrate(graph, rng.normal(size=(8, 4, 7, 9))))
    x = rng.normal(size=(2, 4, 7, 9))
    got = run_int_reference(q, x)
    layer, xq = q.layers[0], got["input"].astype(np.int64)
    w, rq = layer.quant.weight.astype(np.int64), layer.quant.requant
    xp = np.pad(xq, ((0, 0), (0, 0), (1, 0), (2, 1)))
    oh, ow = got[y].shape[2:]
    for n in range(2):
        for o in range(6):
            g = o // 3
            for i in range(oh):
                for j in range(ow):
                    acc = 0
                    for c in range(2):
                        for ky in range(3):
                            for kx in range(3):
                                acc += int(xp[n, g * 2 + c, i * 2 + ky * 2, j * 2 + kx * 2]) * int(w[o, c, ky, kx])
                    v = acc + int(rq.bias[o])
                    t = v * int(rq.mult_pos[o] if v >= 0 else rq.mult_neg[o])
                    sh = int(rq.shift[o])
                    t = (t + (1 << (sh - 1))) >> sh if sh else t
                    assert got[y][n, o, i, j] == min(max(t, rq.lo), rq.hi)


def test_integer_reference_rounds_half_up_and_wraps():
    """Post-processing corner cases through a 1x1 conv with hand-set parameters."""
    b = NetBuilder("t", (1, 1, 1, 4))
    y = b.conv("input", 1, 1, 1)
    graph = load_onnx(b.model([y]))
    q = quantize(graph, {"input": (-127.0, 127.0), y: (-127.0, 127.0)})
    layer = q.layers[0]
    layer.quant.weight[:] = 1
    rq = layer.quant.requant
    rq.bias[:], rq.mult_pos[:], rq.mult_neg[:], rq.shift[:] = 0, 1, 1, 1
    out = run_int_reference(q, np.array([[[[-3.0, -1.0, 1.0, 3.0]]]]))[y]
    assert out.reshape(-1).tolist() == [-1, 0, 1, 2]  # (v + 1) >> 1: half up, also for negatives
    rq.bias[:] = (1 << 31) - 1  # int32 wrap: positive bias plus positive input turns negative
    out = run_int_reference(q, np.array([[[[0.0, 1.0, 2.0, -1.0]]]]))[y]
    assert out.reshape(-1).tolist() == [127, -128, -128, 127]


# ---------------------------------------------------------------------------------------------- accuracy


def test_quantized_accuracy(quantized):
    name, graph, _, q, x = quantized
    ref = run_float(graph, x)
    ints = run_int_reference(q, x)
    assert all(v.dtype == np.int8 for v in ints.values())
    assert ints[q.inputs[0]].shape == x.shape
    deq = dequantize(q, ints)
    for out in q.outputs:
        assert deq[out].shape == ref[out].shape
        cos = _cosines(deq[out], ref[out])
        print(f"{name} {out}: min cosine similarity {cos.min():.5f}")
        assert np.all(cos >= 0.99), (name, out, cos)


@pytest.mark.parametrize("name", ["residual", "concat", "classifier"])
def test_quantized_accuracy_percentile(name):
    model, shape = ALL_NETS[name]()
    graph = load_onnx(model)
    rng = np.random.default_rng(7)
    stats = calibrate(graph, rng.normal(size=(CALIBRATION_SAMPLES,) + shape[1:]), method="percentile")
    q = quantize(graph, stats)
    x = rng.normal(size=(TEST_SAMPLES,) + shape[1:])
    ref, deq = run_float(graph, x), dequantize(q, run_int_reference(q, x))
    for out in q.outputs:
        assert np.all(_cosines(deq[out], ref[out]) >= 0.99)


def test_rounding_of_the_scale_ratio_is_small():
    """One conv: the integer result is the exact result of the int8 operands rounded to the output grid (half a
    step), up to the multiplier's relative precision."""
    b = NetBuilder("t", (1, 3, 9, 9), seed=2)
    y = b.conv("input", 3, 8, 3)
    graph = load_onnx(b.model([y]))
    rng = np.random.default_rng(3)
    q = quantize(graph, calibrate(graph, rng.normal(size=(16, 3, 9, 9))))
    x = rng.normal(size=(4, 3, 9, 9))
    ints = run_int_reference(q, x)
    xq = ints["input"].astype(np.float64) * q.tensors["input"].scale
    layer = q.layers[0]
    w = layer.quant.weight.astype(np.float64) * layer.quant.weight_scale.reshape(-1, 1, 1, 1)
    b_real = layer.quant.requant.bias * q.tensors["input"].scale * layer.quant.weight_scale
    exact = conv2d(xq, w, b_real, stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), group=1)
    s_out = q.tensors[y].scale
    err = np.abs(ints[y] * s_out - np.clip(exact, -128 * s_out, 127 * s_out))
    assert err.max() <= s_out * (0.5 + 1e-3) + math.ulp(1.0)
