"""The quantization workflow: scale selection methods, power-of-two scales, the report, validation, the command line.

The figures are checked against independent computations: clipping and error from the raw data with numpy, tensor
ranges from the float reference, the integer results of power-of-two networks against the integer reference
(tests/int_reference.py), validation statistics against ``onnx.reference`` and numpy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from int_reference import dequantize, run_int_reference
from nets import ALL_NETS, NetBuilder

from dlproc.compiler.calibrate import CalibrationStats, calibrate
from dlproc.compiler.errors import ShapeError
from dlproc.compiler.float_ref import float_evaluator, run_float
from dlproc.compiler.frontend import load_onnx
from dlproc.compiler.quantize import quantize
from dlproc.compiler.report import QuantizationReport
from dlproc.runtime.cli import main
from dlproc.runtime.workflow import Workflow

# ---------------------------------------------------------------------------------------------- outliers

OUTLIER = 50.0  #: the outliers' magnitude, in standard deviations of the bulk


@pytest.fixture(scope="module")
def outlier_data():
    """Gaussian data (sigma 1) with six values at +-50 sigma, the input of a one-conv network."""
    b = NetBuilder("one_conv", (1, 4, 16, 16), seed=0)
    graph = load_onnx(b.model([b.conv("input", 4, 4, 1)]))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 4, 16, 16))
    outliers = rng.choice(x.size, 6, replace=False)
    x.reshape(-1)[outliers] = OUTLIER * np.where(rng.random(6) < 0.5, -1.0, 1.0)
    bulk = np.ones(x.shape, bool)
    bulk.reshape(-1)[outliers] = False
    return graph, x, bulk


def _exact_figures(x: np.ndarray, bulk: np.ndarray, scale: float) -> tuple[float, float, float]:
    """Clipped fraction, fraction of non-zero values that become 0, mean squared error on the bulk."""
    q = np.clip(np.round(x / scale), -128, 127)
    clipped = float(np.mean(np.round(x / scale) != q))
    under = float(np.mean((x != 0) & (q == 0)))
    return clipped, under, float(np.mean((q[bulk] * scale - x[bulk]) ** 2))


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_scale_methods_on_outliers(outlier_data, method):
    """As documented in compiler/calibrate.py: min-max clips nothing but has a step of 50/127; percentile and entropy
    clip about 1e-4 of the values (the outliers) and are >50x more precise on the bulk."""
    graph, x, bulk = outlier_data
    stats = calibrate(graph, x, method=method)
    lo, hi = stats["input"]
    scale = max(-lo, hi) / 127
    clipped, under, mse = _exact_figures(x, bulk, scale)
    _, _, mse_minmax = _exact_figures(x, bulk, OUTLIER / 127)
    outlier_share = (~bulk).mean()
    if method == "minmax":
        assert (lo, hi) == (x.min(), x.max()) and clipped == 0.0
        assert scale == pytest.approx(OUTLIER / 127)
        assert mse == mse_minmax > 0.01  # the step of 0.39 sigma costs the bulk
    else:
        assert 3.5 < max(-lo, hi) < 5.0  # about 4 sigma
        assert outlier_share <= clipped <= 5e-4  # the outliers, and hardly anything else
        assert mse < mse_minmax / 50
    # the report estimates the same figures from the calibration histogram
    row = QuantizationReport(quantize(graph, stats), stats).rows[0]
    assert row.name == "input" and row.role == "input" and not row.exact
    assert row.observed == (x.min(), x.max())
    assert row.clipped == pytest.approx(clipped, abs=0.3 * clipped + 1e-6)
    assert row.underflow == pytest.approx(under, rel=0.05)


# ---------------------------------------------------------------------------------------------- power of two


def _is_pow2(values) -> bool:
    values = np.asarray(values, np.float64)
    return bool(np.all(values > 0) and np.all(np.log2(values) == np.round(np.log2(values))))


@pytest.mark.parametrize("netname", ["pooling", "activations", "residual", "mlp"])
def test_power_of_two_scales_give_shift_only_requantization(netname):
    model, shape = ALL_NETS[netname]()
    rng = np.random.default_rng(11)
    wf = Workflow(model, processor="small_int8", target="ref")
    wf.calibrate(rng.standard_normal((16, *shape[1:])).astype(np.float32), scale_mode="pow2")
    g = wf.graph
    assert all(_is_pow2(t.scale) for t in g.tensors.values())
    for layer in g.layers:
        if layer.target != "hw":
            continue
        rq, quant = layer.quant.requant, layer.quant
        if layer.op in ("conv", "fc"):
            assert _is_pow2(quant.weight_scale)
        if layer.op == "add":
            assert _is_pow2(quant.input_mults)
        window = (math.prod(layer.attrs["kernel"]) if layer.op == "avgpool" else
                  math.prod(g.tensors[layer.inputs[0]].shape[1:]) if layer.op == "gap" else 1)
        if _is_pow2(window):  # documented exception: 1 / window of average pooling, e.g. 3x3
            assert _is_pow2(rq.mult_pos), (layer.name, rq.mult_pos)
        if layer.act.kind != "leaky_relu":  # documented exception: the leaky slope lives in mult_neg
            np.testing.assert_array_equal(rq.mult_neg, rq.mult_pos)
        else:
            ratio = rq.mult_neg / rq.mult_pos
            np.testing.assert_allclose(ratio, layer.act.alpha, rtol=2e-3)
    # the processor computes them exactly (golden model == integer reference) and they stay accurate
    x = rng.standard_normal((2, *shape[1:])).astype(np.float32)
    ref = run_int_reference(g, x)
    for i, frame in enumerate(x):
        for name, value in wf.run_int(frame).items():
            if name in ref:
                np.testing.assert_array_equal(value, ref[name][i].reshape(value.shape), err_msg=name)
    floats, deq = run_float(wf.float_graph, x), dequantize(g, ref)
    for out in g.outputs:
        a, b = floats[out].reshape(2, -1), deq[out].reshape(2, -1)
        assert np.all((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)) > 0.97)


def test_power_of_two_scales_cover_the_range():
    """Each pow2 scale is the fixed scale rounded up to a power of two: the range grows by at most 2x."""
    model, shape = ALL_NETS["conv_kernels"]()
    graph = load_onnx(model)
    stats = calibrate(graph, np.random.default_rng(0).standard_normal((8, *shape[1:])))
    fixed, pow2 = quantize(graph, stats), quantize(graph, stats, scale_mode="pow2", per_channel=False)
    for name, info in pow2.tensors.items():
        ratio = info.scale / fixed.tensors[name].scale
        assert 1.0 <= ratio < 2.0
    for a, b in zip(fixed.layers, pow2.layers, strict=True):
        s_fixed = a.quant.weight_scale.astype(np.float64).max()  # per-tensor pow2 covers the largest channel
        assert np.all(b.quant.weight_scale == b.quant.weight_scale[0])
        assert 1.0 <= b.quant.weight_scale[0] / s_fixed < 2.0
    with pytest.raises(ValueError, match="scale mode"):
        quantize(graph, stats, scale_mode="log")


def test_per_tensor_weights_through_the_workflow():
    model, shape = ALL_NETS["grouped_depthwise"]()
    wf = Workflow(model, processor="tiny_int8")
    report = wf.calibrate(np.random.default_rng(2).standard_normal((8, *shape[1:])).astype(np.float32),
                          per_channel=False)
    for layer in wf.graph.layers:
        scale = layer.quant.weight_scale
        assert np.all(scale == scale[0])
        assert scale[0] == pytest.approx(np.abs(layer.weight).max() / 127, rel=1e-6)
    assert "per-tensor weights" in str(report)


# ---------------------------------------------------------------------------------------------- report


@pytest.fixture(scope="module")
def residual_report():
    model, shape = ALL_NETS["residual"]()
    wf = Workflow(model, processor="tiny_int8")
    x = np.random.default_rng(3).standard_normal((16, *shape[1:])).astype(np.float32)
    report = wf.calibrate(x, method="percentile", percentile=99.9)
    return wf, x, report


def test_report_covers_every_quantized_tensor(residual_report):
    wf, x, report = residual_report
    hw = [layer for layer in wf.graph.layers if layer.target == "hw"]
    assert list(report.layers) == [layer.name for layer in hw]
    assert isinstance(wf.calibration, CalibrationStats) and wf.calibration.samples == 16
    text = str(report)
    for layer in hw:
        assert layer.name in text and layer.output in text
        kinds = [row.kind for row in report.layers[layer.name]]
        assert kinds.count("weight") == (layer.op in ("conv", "fc"))
        assert kinds[-1] == "activation"
    values = run_float(wf.float_graph, x)  # the ranges the calibration saw, recomputed independently
    for row in report.rows:
        if row.kind == "activation":
            assert row.observed == pytest.approx((values[row.name].min(), values[row.name].max()))
            assert row.scale[0] == wf.graph.tensors[row.name].scale
            q = np.round(values[row.name] / row.scale[0])
            exact = np.mean((q > 127) | (q < -128))
            assert row.clipped == pytest.approx(exact, abs=0.35 * exact + 2e-4)


def test_report_parameter_figures_are_exact(residual_report):
    wf, _, report = residual_report
    for layer in wf.graph.layers:
        if layer.op not in ("conv", "fc"):
            continue
        weight_row = next(r for r in report.layers[layer.name] if r.kind == "weight")
        s = layer.quant.weight_scale.astype(np.float64).reshape(-1, *([1] * (layer.weight.ndim - 1)))
        w = layer.weight.astype(np.float64)
        assert weight_row.exact and weight_row.clipped == 0.0  # absmax scales never clip
        assert weight_row.underflow == np.mean((w != 0) & (np.abs(w / s) < 0.5))
        assert weight_row.observed == (w.min(), w.max())
        assert weight_row.representable == pytest.approx((-127 * s.max(), 127 * s.max()))


def test_histogram_pngs(residual_report, tmp_path):
    """One PNG per processor layer; the same bytes every time; blue bars, and grey ones where values are lost."""
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    _, _, report = residual_report
    names = list(report.layers)
    first = report.plot_histograms(tmp_path / "a", layers=names[:2] + names[-1:])
    assert [p.name for p in first] == [f"00_{names[0]}.png", f"01_{names[1]}.png",
                                       f"{len(names) - 1:02d}_{names[-1]}.png"]
    again = report.plot_histograms(tmp_path / "b", layers=names[:2] + names[-1:])
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    image = imread(first[0])[..., :3]
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]
    grey = (np.abs(red - green) < 0.02) & (np.abs(green - blue) < 0.02) & (red > 0.45) & (red < 0.8)
    dark_blue = (blue > red + 0.3) & (blue > 0.4)
    assert dark_blue.sum() > 500  # representable bins
    rows = report.layers[names[0]]
    assert any(r.underflow for r in rows) and grey.sum() > 200  # values below the step: grey bins
    with pytest.raises(KeyError, match="no quantized layers"):
        report.plot_histograms(tmp_path, layers=["nonexistent"])


def test_calibration_progress_bar(capfd):
    b = NetBuilder("tiny", (1, 2, 4, 4), seed=1)
    graph = load_onnx(b.model([b.relu(b.conv("input", 2, 2, 1))]))
    x = np.random.default_rng(0).standard_normal((300, 2, 4, 4))
    calibrate(graph, x[:10])
    assert "calibrating" not in capfd.readouterr().err  # few samples: no bar
    calibrate(graph, x, batch_size=64)
    err = capfd.readouterr().err
    assert "calibrating tiny" in err and "300/300" in err  # more than 256: on by default
    calibrate(graph, x, progress=False)
    assert "calibrating" not in capfd.readouterr().err
    calibrate(graph, iter([x[:5], x[5:9]]), progress=True)
    assert "9sample" in capfd.readouterr().err.replace(" ", "")  # an iterable: counts without a total


# ---------------------------------------------------------------------------------------------- validate


@pytest.mark.parametrize("netname", ["classifier", "bn_opset13"])
def test_validate_against_independent_references(netname):
    """validate's figures against numpy on the float evaluator's and the target's outputs; its float outputs against
    onnxruntime within 1e-4 (bn_opset13: unfolded BatchNormalizations at opset 13)."""
    ort = pytest.importorskip("onnxruntime")
    model, shape = ALL_NETS[netname]()
    rng = np.random.default_rng(4)
    wf = Workflow(model, processor="tiny_int8")
    wf.calibrate(rng.standard_normal((16, *shape[1:])).astype(np.float32))
    x = rng.standard_normal((12, *shape[1:])).astype(np.float32)
    labels = rng.integers(0, 10, 12)

    def mean_top_probability(y, _labels):
        return float(np.max(y, axis=1).mean())

    result = wf.validate(x, labels, metric=mean_top_probability)
    session = float_evaluator(model)
    floats = np.concatenate([session.run(None, {"input": f[None]})[0] for f in x])
    onnxruntime = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    independent = np.concatenate([onnxruntime.run(None, {"input": f[None]})[0] for f in x])
    reported = result.float_outputs[wf.float_graph.outputs[0]]
    assert np.abs(reported - independent).max() <= 1e-4 * np.abs(independent).max()
    np.testing.assert_array_equal(reported, floats)
    ints = wf.predict(x)
    assert result.float_accuracy == np.mean(floats.argmax(1) == labels)
    assert result.int8_accuracy == np.mean(ints.argmax(1) == labels)
    assert result.agreement == np.mean(floats.argmax(1) == ints.argmax(1))
    assert result.float_metric == pytest.approx(floats.max(1).mean())
    assert result.int8_metric == pytest.approx(ints.max(1).mean())
    err = result.outputs[wf.float_graph.outputs[0]]
    diff = ints.astype(np.float64) - floats
    assert err.max_abs == pytest.approx(np.abs(diff).max()) and err.mean_abs == pytest.approx(np.abs(diff).mean())
    assert err.sqnr_db == pytest.approx(10 * np.log10((floats.astype(np.float64) ** 2).sum() / (diff ** 2).sum()))
    assert err.cosine == pytest.approx(np.dot(floats.ravel(), ints.ravel())
                                       / np.linalg.norm(floats) / np.linalg.norm(ints), rel=1e-6)
    assert 0.99 < err.cosine <= 1.0 and err.sqnr_db > 20
    text = str(result)
    assert "top-1 accuracy" in text and "mean_top_probability" in text and "SQNR" in text
    with pytest.raises(ShapeError, match="3 labels for 12"):
        wf.validate(x, labels[:3])


# ---------------------------------------------------------------------------------------------- command line


def test_cli_quantize(tmp_path, capsys):
    import onnx

    pytest.importorskip("matplotlib")
    model, shape = ALL_NETS["mlp"]()
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(5)
    np.save(tmp_path / "cal.npy", rng.standard_normal((32, *shape[1:])).astype(np.float32))
    np.save(tmp_path / "val.npy", rng.standard_normal((8, *shape[1:])).astype(np.float32))
    np.save(tmp_path / "labels.npy", rng.integers(0, 10, 8))
    rc = main(["quantize", str(path), "--processor", "tiny_int8", "--calibration", str(tmp_path / "cal.npy"),
               "--method", "entropy", "--scale-mode", "pow2", "--per-tensor", "--report", str(tmp_path / "plots"),
               "--qdq", str(tmp_path / "mlp_qdq.onnx"), "--validate", str(tmp_path / "val.npy"), "--labels",
               str(tmp_path / "labels.npy")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "activations entropy, per-tensor weights, power-of-two scales" in out
    assert "top-1 accuracy" in out and "QDQ model written" in out
    assert len(list((tmp_path / "plots").glob("*.png"))) == 6  # mlp's 4 gemm, add and concat
    exported = onnx.load(tmp_path / "mlp_qdq.onnx")
    assert any(n.op_type == "QuantizeLinear" for n in exported.graph.node)
    assert main(["quantize", str(path), "--processor", "tiny_int8"]) == 2  # no calibration data, no QDQ scales
    assert "--calibration" in capsys.readouterr().err
