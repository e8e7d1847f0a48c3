"""Workflow.compare: per-layer error of the processor against the float network, checked against metrics computed
here from the processor's activations and ``onnx.reference`` on the original ONNX model (intermediate tensors made
outputs), which shares no code with the float evaluator the comparison uses."""

import json

import numpy as np
import onnx
import pytest
from nets import ALL_NETS
from onnx import helper

from dlproc.compiler.float_ref import float_evaluator
from dlproc.runtime.cli import main
from dlproc.runtime.workflow import Workflow

NETS = ["residual", "host_ops", "bn_fold", "matmul_add", "classifier"]


def _onnx_values(model: onnx.ModelProto, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in have)
    sess = float_evaluator(m)
    per_frame = [sess.run(names, {m.graph.input[0].name: frame[None]}) for frame in x]
    return {n: np.concatenate([np.asarray(f[i]) for f in per_frame]) for i, n in enumerate(names)}


def _setup(netname: str):
    model, _ = ALL_NETS[netname]()
    rng = np.random.default_rng(8)
    wf = Workflow(model, processor="tiny_int8", target="ref")
    wf.calibrate(rng.standard_normal((8, *wf.input_shape)).astype(np.float32))
    x = 1.5 * rng.standard_normal((2, *wf.input_shape)).astype(np.float32)  # wider than calibration: some clipping
    return model, wf, x


@pytest.mark.parametrize("netname", NETS)
def test_compare_against_onnx_reference(netname):
    model, wf, x = _setup(netname)
    result = wf.compare(x)
    d = result.to_dict()
    acts = wf.activations(x)
    layers = wf.compiled.layers
    assert [row["name"] for row in d["layers"]] == [layer.name for layer in layers] and not d["notes"]
    ref = _onnx_values(model, x, [row["tensor"] for row in d["layers"]])
    for row, layer in zip(d["layers"], layers, strict=True):
        assert row["tensor"] == layer.outputs[0] and row["op"] == layer.op and row["target"] == layer.target
        want = ref[row["tensor"]].astype(np.float64).reshape(-1)
        got = acts[layer.name].astype(np.float64).reshape(-1)
        diff = got - want
        assert row["max_abs"] == pytest.approx(np.max(np.abs(diff)), rel=1e-3, abs=1e-5), row["name"]
        cos = np.dot(got, want) / (np.linalg.norm(got) * np.linalg.norm(want))
        assert row["cosine"] == pytest.approx(cos, abs=1e-5), row["name"]
        sqnr = 10 * np.log10(np.sum(want ** 2) / np.sum(diff ** 2))
        assert row["sqnr_db"] == pytest.approx(sqnr, abs=0.01), row["name"]
        scale = wf.graph.tensors[row["tensor"]].scale
        clipped = np.mean((want / scale > 127.5) | (want / scale < -128.5))
        assert row["clipped"] == pytest.approx(clipped, abs=2 / want.size + 1e-12), row["name"]
    # the worst layers are the lowest SQNRs, and the table marks them
    by_sqnr = sorted(d["layers"], key=lambda row: row["sqnr_db"])[:3]
    assert d["worst"] == [row["name"] for row in by_sqnr]
    text = str(result)
    for i, name in enumerate(d["worst"]):
        line = next(ln for ln in text.splitlines() if ln.startswith(name[:30]))
        assert line.endswith(f"<- worst {i + 1}")


def test_some_values_clip_when_inputs_exceed_calibration():
    _, wf, x = _setup("classifier")
    d = wf.compare(x * 4).to_dict()
    assert max(row["clipped"] for row in d["layers"]) > 0.01


def test_cli_compare(tmp_path, capsys):
    model, wf, x = _setup("residual")
    onnx.save(model, tmp_path / "net.onnx")
    np.save(tmp_path / "cal.npy", np.random.default_rng(8).standard_normal((8, *wf.input_shape)).astype(np.float32))
    np.save(tmp_path / "x.npy", x)
    base = ["compare", str(tmp_path / "net.onnx"), "--processor", "tiny_int8", "--calibration",
            str(tmp_path / "cal.npy"), "--input", str(tmp_path / "x.npy")]
    assert main([*base, "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    d = json.loads((tmp_path / "c.json").read_text())
    assert [row["name"] for row in d["layers"]] == [layer.name for layer in wf.compile().layers]
    assert "<- worst 1" in out and d["worst"][0] in out
    assert main([*base, "--layers", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nope' is neither a layer" in err


def test_json_of_a_layer_equal_to_float_is_strict(tmp_path):
    from dlproc.runtime.compare import Comparison, LayerComparison

    rows = [LayerComparison("a", "conv", "hw", "t_a", 1.0, float("inf"), 0.0, 0.0, 0.1),
            LayerComparison("b", "fc", "hw", "t_b", 0.9, 12.5, 0.3, 0.01, 0.2)]
    result = Comparison("net", "ref", 1, rows, [])
    assert result.worst() == [rows[1]]  # a layer equal to float is never among the worst
    text = (result.to_json(tmp_path / "c.json")).read_text()
    d = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert d["layers"][0]["sqnr_db"] is None and d["layers"][1]["sqnr_db"] == 12.5 and d["worst"] == ["b"]
