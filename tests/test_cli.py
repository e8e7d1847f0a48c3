"""The ``dlproc`` command line: compile, run, estimate, generate, and clear one-line errors for bad input."""

import json

import numpy as np
import onnx
import pytest
from nets import ALL_NETS
from onnx import TensorProto, helper

from dlproc.compiler.float_ref import float_evaluator
from dlproc.runtime.cli import main


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model, shape = ALL_NETS["classifier"]()
    onnx.save(model, d / "net.onnx")
    rng = np.random.default_rng(0)
    np.save(d / "calib.npy", rng.standard_normal((8, *shape[1:])).astype(np.float32))
    np.save(d / "x.npy", rng.standard_normal((3, *shape[1:])).astype(np.float32))
    return d, model


def test_compile_then_run_on_the_golden_model(classifier, capsys):
    d, model = classifier
    assert main(["compile", str(d / "net.onnx"), "--processor", "tiny_int8", "--calibration", str(d / "calib.npy"),
                 "-o", str(d / "bundle")]) == 0
    out = capsys.readouterr().out
    assert "DDR memory map" in out and "Total parameter memory" in out
    assert main(["run", str(d / "bundle"), "--input", str(d / "x.npy"), "--target", "ref",
                 "-o", str(d / "y.npz")]) == 0
    y = np.load(d / "y.npz")
    x = np.load(d / "x.npy")
    want = np.concatenate([float_evaluator(model).run(None, {model.graph.input[0].name: f[None]})[0] for f in x])
    got = y[model.graph.output[0].name]
    assert got.shape == want.shape
    cos = np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert np.all(cos > 0.99)


def test_estimate_and_presets(classifier, capsys):
    d, _ = classifier
    assert main(["presets"]) == 0
    assert "zcu102_int8" in capsys.readouterr().out
    assert main(["estimate", str(d / "net.onnx"), "--processor", "small_int8"]) == 0
    assert "Frames/s" in capsys.readouterr().out


def test_generate_writes_verilog_and_rtlil(tmp_path, capsys):
    assert main(["generate", "--processor", "tiny_int8", "-o", str(tmp_path)]) == 0
    v = (tmp_path / "dlproc_top.v").read_text()
    assert "module dlproc_top" in v and "m_axi__araddr" in v and "s_axil__awaddr" in v
    assert (tmp_path / "dlproc_top.il").stat().st_size > 0
    err = capsys.readouterr().err  # the long step says what it does and how long it took
    assert "dlproc: elaborating [" in err and ": done in " in err


@pytest.mark.parametrize("argv,message", [
    (["compile", "{d}/net.onnx", "--processor", "zcu104", "-o", "{d}/b2"], "unknown processor 'zcu104'"),
    (["compile", "{d}/net.onnx", "--processor", "tiny_int8", "-o", "{d}/b3"], "needs calibration data"),
    (["compile", "{d}/missing.onnx", "--processor", "tiny_int8", "--calibration", "{d}/calib.npy", "-o", "{d}/b4"],
     "missing.onnx"),
    (["compile", "{d}/net.onnx", "--processor", "{d}/bad.json", "--calibration", "{d}/calib.npy", "-o", "{d}/b5"],
     "ProcessorConfig.conv_ic_lanes"),
    (["compile", "{d}/net.onnx", "--processor", "tiny_int8", "--calibration", "{d}/badcalib.npy", "-o", "{d}/b6"],
     "expected [N,"),
    (["run", "{d}/nobundle", "--input", "{d}/x.npy"], "not a dlproc bundle"),
])
def test_bad_input_gives_one_clear_line(classifier, capsys, argv, message):
    d, _ = classifier
    (d / "bad.json").write_text(json.dumps({"conv_ic_lanes": 3}))
    np.save(d / "badcalib.npy", np.zeros((2, 5, 5), np.float32))
    (d / "nobundle").mkdir(exist_ok=True)
    code = main([a.format(d=d) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not any(p.name.startswith(("b2", "b3", "b4", "b5", "b6")) for p in d.iterdir()), "no partial bundle"


def test_unsupported_operator_names_node_and_op(tmp_path, capsys):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu0"),
             helper.make_node("FancyPool", ["r"], ["y"], name="fancy1", domain="com.acme")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.acme", 1)])
    path = tmp_path / "fancy.onnx"
    onnx.save(model, path)
    np.save(tmp_path / "c.npy", np.zeros((2, 3, 8, 8), np.float32))
    code = main(["compile", str(path), "--processor", "tiny_int8", "--calibration", str(tmp_path / "c.npy"),
                 "-o", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "fancy1" in err and "FancyPool" in err
    assert not (tmp_path / "b").exists()
