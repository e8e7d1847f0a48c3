"""A corpus of bad and unusual input through the command line: every case is refused with one line naming the
problem (or rightly accepted), never with a traceback, and no file appears or disappears that should not.

Each case runs ``dlproc.runtime.cli.main(argv)`` in-process (subprocesses only for the signal and pipe cases) on a
tiny network, the golden model ("ref") and the tiny processor presets. A case gives the arguments (``{W}`` is the
shared read-only workspace of inputs, ``{T}`` the case's own directory), an optional ``setup(T, W)``, the expected
exit status, words the message must contain, and the paths under ``{T}`` that the command may create or change.
Both directories are snapshotted (names, sizes, modification times) before and after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dlproc.runtime.cli import main

SHAPE = (1, 3, 8, 8)


# --------------------------------------------------------------------------------------------------- the workspace
def _model(nodes, inits, *, shape=SHAPE, in_type=TensorProto.FLOAT, inputs=None, outputs=("y",), opset=13,
           domains=(), out_shapes=None) -> onnx.ModelProto:
    ins = inputs if inputs is not None else [helper.make_tensor_value_info("x", in_type, list(shape))]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, (out_shapes or {}).get(o)) for o in outputs]
    g = helper.make_graph(nodes, "bad", ins, outs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)] +
                          [helper.make_opsetid(d, 1) for d in domains])
    m.ir_version = 8
    try:  # give the outputs their inferred shapes (the checker wants them); a bad model keeps what it has
        done = onnx.shape_inference.infer_shapes(m).graph
        inferred = {vi.name: vi for vi in list(done.value_info) + list(done.output)
                    if vi.type.tensor_type.HasField("shape")}
    except Exception:
        inferred = {}
    for i, o in enumerate(outputs):
        if not (out_shapes or {}).get(o):  # what an exporter would have declared
            m.graph.output[i].CopyFrom(inferred.get(o) or helper.make_tensor_value_info(
                o, TensorProto.FLOAT, [1, 5] if o == "y" and len(nodes) > 3 else list(SHAPE)))
    return m


def _weights(cout=4, cin=3, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(0, 0.4, (cout, cin, k, k)).astype(np.float32),
            "b": rng.normal(0, 0.1, cout).astype(np.float32)}


def _convnet(*, conv_attrs=None, w=None, shape=SHAPE, pool=None, **kw) -> onnx.ModelProto:
    """conv 3->4 (3x3, pad 1) -> Relu -> GlobalAveragePool -> Flatten -> Gemm 4->5."""
    inits = _weights() if w is None else w
    rng = np.random.default_rng(1)
    inits = {**inits, "fw": rng.normal(0, 0.5, (5, 4)).astype(np.float32), "fb": np.zeros(5, np.float32)}
    attrs = {"pads": [1, 1, 1, 1]} if conv_attrs is None else conv_attrs
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv0", **attrs),
             helper.make_node("Relu", ["c"], ["r"], name="relu0")]
    last = "r"
    if pool is not None:
        nodes.append(helper.make_node("MaxPool", ["r"], ["p"], name="pool0", **pool))
        last = "p"
    nodes += [helper.make_node("GlobalAveragePool", [last], ["g"], name="gap0"),
              helper.make_node("Flatten", ["g"], ["f"], name="flat0"),
              helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc0", transB=1)]
    return _model(nodes, inits, shape=shape, **kw)


def _save(model: onnx.ModelProto, path: Path) -> None:
    path.write_bytes(model.SerializeToString())


@pytest.fixture(scope="module")
def W(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("workspace")
    rng = np.random.default_rng(0)
    good = _convnet()
    onnx.checker.check_model(good)
    _save(good, w / "net.onnx")
    calib = rng.standard_normal((4, *SHAPE[1:])).astype(np.float32)
    np.save(w / "calib.npy", calib)
    np.save(w / "x.npy", rng.standard_normal((2, *SHAPE[1:])).astype(np.float32))
    # calibration / input data variants
    data = {
        "nan": calib.copy(), "inf": calib.copy(), "neginf": calib.copy(), "allnan": np.full_like(calib, np.nan),
        "zeros": np.zeros_like(calib), "const": np.full_like(calib, 5.0),
        "uint8": rng.integers(0, 256, calib.shape).astype(np.uint8),
        "int8": rng.integers(-128, 128, calib.shape).astype(np.int8),
        "int32": rng.integers(0, 256, calib.shape).astype(np.int32),
        "bool": rng.integers(0, 2, calib.shape).astype(bool),
        "complex": calib.astype(np.complex64), "strings": np.array(["a", "b"]),
        "wrongshape": np.zeros((2, 5, 5), np.float32), "wrongchan": np.zeros((2, 4, 8, 8), np.float32),
        "ndim5": np.zeros((2, 1, 3, 8, 8), np.float32), "empty": np.zeros((0, 3, 8, 8), np.float32),
        "scalar": np.float32(1.0), "f64": calib.astype(np.float64), "f16": calib.astype(np.float16),
        "oneframe": calib[0], "huge64": np.full(calib.shape, 1e300),
    }
    data["nan"][2, 0, 1, 1] = np.nan
    data["inf"][1, 2, 3, 3] = np.inf
    data["neginf"][3, 0, 0, 0] = -np.inf
    for name, arr in data.items():
        np.save(w / f"{name}.npy", arr)
    np.save(w / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(w / "two.npz", a=calib, b=calib)
    np.savez(w / "one.npz", a=calib)
    np.savez(w / "none.npz")
    (w / "zero_bytes.npy").write_bytes(b"")
    (w / "garbage.npy").write_bytes(b"this is not numpy\n" * 4)
    (w / "truncated.npy").write_bytes((w / "calib.npy").read_bytes()[:200])
    (w / "adir").mkdir()
    (w / "adir" / "inside.txt").write_text("x")
    # processor configurations
    tiny = json.loads(json.dumps(__import__("dlproc").ProcessorConfig.preset("tiny_int8").to_dict()))
    for field_name, value in BAD_FIELDS.items():
        (w / f"cfg_{field_name}.json").write_text(json.dumps({**tiny, field_name: value}))
    (w / "cfg_unknown.json").write_text(json.dumps({**tiny, "lanes": 4}))
    (w / "cfg_notjson.json").write_text("{conv_ic_lanes: 4")
    (w / "cfg_array.json").write_text("[1, 2]")
    (w / "cfg_empty.json").write_text("")
    (w / "cfg_small_ddr.json").write_text(json.dumps({**tiny, "ddr_size": 65536}))
    (w / "cfg_tiny.json").write_text(json.dumps(tiny))
    # models
    for name, model in bad_models().items():
        _save(model, w / f"{name}.onnx")
    (w / "empty.onnx").write_bytes(b"")
    (w / "garbage.onnx").write_bytes(b"\x08\x07garbage" * 10)
    (w / "truncated.onnx").write_bytes((w / "net.onnx").read_bytes()[:150])
    (w / "text.onnx").write_text("graph { node { op_type: 'Relu' } }")
    (w / "model_dir.onnx").mkdir()
    # a compiled bundle, and a network that runs entirely on the host
    assert main(["compile", str(w / "net.onnx"), "--processor", "tiny_int8", "--calibration", str(w / "calib.npy"),
                 "-o", str(w / "bundle")]) == 0
    assert main(["compile", str(w / "hostonly.onnx"), "--processor", "tiny_int8", "--calibration",
                 str(w / "calib.npy"), "-o", str(w / "hostbundle")]) == 0
    return w


BAD_FIELDS = {"dtype": "int4", "conv_ic_lanes": 3, "conv_oc_lanes": 2, "fc_threads": 0, "axi_data_width": 48,
              "input_buffer_kib": 0, "weight_buffer_kib": 0, "acc_buffer_entries": 100, "param_buffer_entries": 3,
              "clock_mhz": 5, "ddr_size": 1000, "ddr_base": 1, "axi_addr_width": 70, "event_log_depth": 3}


def bad_models() -> dict[str, onnx.ModelProto]:
    w = _weights()
    nan_w = {**w, "w": w["w"].copy()}
    nan_w["w"][1, 2, 0, 1] = np.nan
    inf_w = {**w, "w": w["w"].copy()}
    inf_w["w"][0, 0, 0, 0] = np.inf
    nan_b = {**w, "b": np.array([0, np.nan, 0, 0], np.float32)}
    relu = [helper.make_node("Relu", ["x"], ["y"], name="relu0")]
    ident = _model([], {}, outputs=("x",))
    two_in = _model([helper.make_node("Add", ["x", "x2"], ["y"], name="add0")], {},
                    inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE)),
                            helper.make_tensor_value_info("x2", TensorProto.FLOAT, list(SHAPE))])
    cond = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "branch", [],
                             [helper.make_tensor_value_info("z", TensorProto.FLOAT, list(SHAPE))])
    big = {"w": np.random.default_rng(2).normal(0, 0.1, (256, 3, 3, 3)).astype(np.float32),
           "b": np.zeros(256, np.float32)}
    bigfc = {"fw": np.zeros((300, 256), np.float32)}
    big_nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
                 helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap0"),
                 helper.make_node("Flatten", ["g"], ["f"], name="flat0"),
                 helper.make_node("MatMul", ["f", "fwt"], ["y"], name="fc0")]
    return {
        "nan_weight": _convnet(w=nan_w), "inf_weight": _convnet(w=inf_w), "nan_bias": _convnet(w=nan_b),
        "stride0": _convnet(conv_attrs={"pads": [1, 1, 1, 1], "strides": [0, 1]}),
        "neg_pads": _convnet(conv_attrs={"pads": [-1, 0, 0, 0]}),
        "dilation0": _convnet(conv_attrs={"pads": [1, 1, 1, 1], "dilations": [0, 1]}),
        "kernel_too_large": _convnet(w=_weights(k=11), conv_attrs={}),
        "pool_too_large": _convnet(pool={"kernel_shape": [12, 12]}),
        "pool_stride0": _convnet(pool={"kernel_shape": [2, 2], "strides": [0, 0]}),
        "pool_no_kernel": _convnet(pool={"strides": [2, 2]}),
        "zero_channels": _convnet(w={"w": np.zeros((0, 3, 3, 3), np.float32), "b": np.zeros(0, np.float32)}),
        "zero_width": _convnet(shape=(1, 3, 8, 0)),
        "batch0": _convnet(shape=(0, 3, 8, 8)),
        "batch2": _convnet(shape=(2, 3, 8, 8)),
        "dynamic_h": _convnet(shape=(1, 3, "H", 8)),
        "no_shape": _model(relu, {}, inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, None)]),
        "scalar_input": _model(relu, {}, shape=()),
        "int_input": _convnet(in_type=TensorProto.UINT8),
        "two_inputs": two_in,
        "no_nodes": ident,
        "custom_op": _model([helper.make_node("FancyPool", ["x"], ["y"], name="fancy0", domain="com.acme")], {},
                            domains=("com.acme",)),
        "control_flow": _model([helper.make_node("If", ["cond"], ["y"], name="if0", then_branch=cond,
                                                 else_branch=cond)],
                               {"cond": np.array(True)}),
        "unknown_attr": _convnet(conv_attrs={"pads": [1, 1, 1, 1], "flavour": 3}),
        "opset_old": _convnet(opset=6),
        "opset_new": _convnet(opset=40),
        "const_output": _model([helper.make_node("Relu", ["x"], ["r"], name="relu0")], {"k": np.ones(3, np.float32)},
                               outputs=("r", "k"), out_shapes={"r": list(SHAPE), "k": [3]}),
        "undefined_input": _model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add0")], {}),
        "group_mismatch": _convnet(conv_attrs={"pads": [1, 1, 1, 1], "group": 2}),
        "weight_shape": _convnet(w={"w": np.zeros((4, 5, 3, 3), np.float32), "b": np.zeros(4, np.float32)}),
        "too_big": _model(big_nodes, {**big, "fwt": bigfc["fw"].T.copy()}),
        "hostonly": _model([helper.make_node("Softmax", ["x"], ["y"], name="softmax0", axis=1)], {}),
    }


# --------------------------------------------------------------------------------------------------- the harness
@dataclass
class Case:
    id: str
    argv: list[str]
    code: int = 2
    words: tuple[str, ...] = ()
    setup: Callable[[Path, Path], None] | None = None
    changes: tuple[str, ...] = ()       # paths under {T} that may appear, change or disappear
    env: dict[str, str] = field(default_factory=dict)
    patch: Callable | None = None       # patch(monkeypatch) before running


def _snapshot(*roots: Path) -> dict[str, tuple]:
    snap = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = p.lstat()
                is_dir = p.is_dir()
                snap[str(p)] = (is_dir, 0 if is_dir else st.st_size, 0 if is_dir else st.st_mtime_ns)
    return snap


def run_case(case: Case, W: Path, T: Path, capsys, monkeypatch) -> tuple[int, str, str]:
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    if case.setup:
        case.setup(T, W)
    if case.patch:
        case.patch(monkeypatch)
    capsys.readouterr()
    before = _snapshot(W, T)
    argv = [a.format(W=W, T=T) for a in case.argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # an argparse usage error raised out of main
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:  # noqa: BLE001 - an exception escaping main is a failure of the case
        import traceback

        out = capsys.readouterr()
        return -1, out.out, out.err + "Traceback (escaped main)\n" + "".join(traceback.format_exception(exc))
    out = capsys.readouterr()
    after = _snapshot(W, T)
    allowed = {str(T / c) for c in case.changes}
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    unexpected = sorted(p for p in changed if not any(p == a or p.startswith(a + os.sep) for a in allowed))
    if unexpected:
        return code, out.out, out.err + f"\nUNEXPECTED FILE CHANGES: {unexpected}"
    return code, out.out, out.err


def check(case: Case, W: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    T = tmp_path / "t"
    T.mkdir()
    code, out, err = run_case(case, W, T, capsys, monkeypatch)
    assert "UNEXPECTED FILE CHANGES" not in err, err
    assert "Traceback" not in err + out, err
    assert code == case.code, f"exit {code}, want {case.code}: {err}"
    if case.code != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines, "a refusal must say why"
        if case.code in (1, 2) and not err.startswith("usage:"):
            assert len(lines) == 1, f"one line expected: {err}"
    for word in case.words:
        assert word.lower() in (err + out).lower(), f"{word!r} not in: {err}{out}"


# --------------------------------------------------------------------------------------------------- the cases
CAL = ["compile", "{W}/net.onnx", "--processor", "tiny_int8", "-o", "{T}/b", "--calibration"]
QUANT = ["quantize", "{W}/net.onnx", "--processor", "tiny_int8", "--calibration"]
EST = ["estimate", "{W}/net.onnx", "--processor", "tiny_int8", "--calibration"]
RUN = ["run", "{W}/bundle", "--input"]


def _copy_bundle(name="bundle", to="b"):
    def setup(T: Path, W: Path) -> None:
        shutil.copytree(W / name, T / to)
    return setup


def _edit_manifest(fn):
    def setup(T: Path, W: Path) -> None:
        shutil.copytree(W / "bundle", T / "b")
        m = json.loads((T / "b" / "manifest.json").read_text())
        m = fn(m)
        (T / "b" / "manifest.json").write_text(json.dumps(m))
    return setup


def _drop(key):
    def fn(m):
        m.pop(key)
        return m
    return fn


def _set(key, value):
    def fn(m):
        m[key] = value
        return m
    return fn


def _edit_image(fn):
    def setup(T: Path, W: Path) -> None:
        shutil.copytree(W / "bundle", T / "b")
        data = (T / "b" / "image.bin").read_bytes()
        (T / "b" / "image.bin").write_bytes(fn(data))
    return setup


def _mkdir(*names, files=()):
    def setup(T: Path, W: Path) -> None:
        for n in names:
            (T / n).mkdir(parents=True, exist_ok=True)
        for f in files:
            (T / f).parent.mkdir(parents=True, exist_ok=True)
            (T / f).write_text("precious\n")
    return setup


def _raise_in(target: str, exc: BaseException):
    def patch(monkeypatch):
        def boom(*a, **k):
            raise exc
        monkeypatch.setattr(target, boom)
    return patch


def _data_cases() -> list[Case]:
    """The same bad data through calibration (compile, quantize, estimate) and inference (run)."""
    bad = [  # file, words of the message
        ("nan", ("sample 2", "NaN")), ("inf", ("sample 1", "Inf")), ("neginf", ("sample 3",)),
        ("allnan", ("sample 0", "NaN")), ("zeros", ("constant",)), ("const", ("constant", "5")),
        ("uint8", ("uint8", "--input-scale")), ("int8", ("int8", "--input-scale")),
        ("int32", ("int32", "--input-scale")), ("bool", ("bool",)), ("complex", ("complex",)),
        ("strings", ("<U1",)), ("objects", ("objects.npy",)), ("wrongshape", ("shape",)),
        ("wrongchan", ("shape", "(2, 4, 8, 8)")), ("ndim5", ("shape",)), ("empty", ("empty",)),
        ("scalar", ("shape",)), ("huge64", ("Inf",)), ("zero_bytes", ("zero_bytes.npy",)),
        ("garbage", ("garbage.npy", "not a readable")), ("truncated", ("truncated.npy",)),
        ("two", ("2 arrays",)), ("none", ("0 arrays",)), ("adir", ("directory",)), ("missing", ("does not exist",)),
    ]
    cases = []
    for name, words in bad:
        ext = ".npz" if name in ("two", "none") else ("" if name == "adir" else ".npy")
        path = f"{{W}}/{name}{ext}"
        for prefix, cmd in (("compile", CAL), ("quantize", QUANT), ("estimate", EST)):
            if prefix != "compile" and name in ("bool", "scalar", "ndim5", "truncated", "none", "huge64"):
                continue
            cases.append(Case(f"{prefix}-calibration-{name}", [*cmd, path], words=words))
        if name in ("zeros", "const"):  # constant inputs are fine to run
            cases.append(Case(f"run-input-{name}", [*RUN, path], code=0, words=("argmax",)))
            continue
        run_words = tuple("frame" + w[6:] if w.startswith("sample") else w for w in words)
        cases.append(Case(f"run-input-{name}", [*RUN, path], words=run_words))
    accepted = [
        Case("compile-calibration-uint8-scaled", [*CAL, "{W}/uint8.npy", "--input-scale", "255"], code=0,
             words=("bundle written",), changes=("b",)),
        Case("compile-calibration-f64", [*CAL, "{W}/f64.npy"], code=0, changes=("b",)),
        Case("compile-calibration-f16", [*CAL, "{W}/f16.npy"], code=0, changes=("b",)),
        Case("compile-calibration-oneframe", [*CAL, "{W}/oneframe.npy"], code=0, changes=("b",)),
        Case("compile-calibration-npz", [*CAL, "{W}/one.npz"], code=0, changes=("b",)),
        Case("run-input-uint8-scaled", [*RUN, "{W}/uint8.npy", "--input-scale", "255"], code=0, words=("argmax",)),
        Case("run-input-oneframe", [*RUN, "{W}/oneframe.npy"], code=0, words=("(1, 5)",)),
        Case("compile-input-scale-zero", [*CAL, "{W}/uint8.npy", "--input-scale", "0"], words=("--input-scale",)),
        Case("compile-input-scale-negative", [*CAL, "{W}/uint8.npy", "--input-scale", "-255"],
             words=("--input-scale",)),
        Case("compile-input-scale-nan", [*CAL, "{W}/uint8.npy", "--input-scale", "nan"], words=("--input-scale",)),
        Case("compile-input-scale-word", [*CAL, "{W}/uint8.npy", "--input-scale", "byte"], words=("--input-scale",)),
        Case("run-input-scale-zero", [*RUN, "{W}/uint8.npy", "--input-scale", "0"], words=("--input-scale",)),
        Case("compile-percentile-zero", [*CAL, "{W}/calib.npy", "--method", "percentile", "--percentile", "0"],
             words=("--percentile",)),
        Case("compile-percentile-101", [*CAL, "{W}/calib.npy", "--method", "percentile", "--percentile", "101"],
             words=("--percentile",)),
        Case("compile-method-bogus", [*CAL, "{W}/calib.npy", "--method", "median"], words=("--method",)),
        Case("compile-scale-mode-bogus", [*CAL, "{W}/calib.npy", "--scale-mode", "log"], words=("--scale-mode",)),
        Case("compile-quantize-settings", [*CAL, "{W}/calib.npy", "--per-tensor", "--scale-mode", "pow2",
                                           "--method", "percentile", "--percentile", "99.9"], code=0,
             changes=("b",)),
        Case("compile-no-calibration", ["compile", "{W}/net.onnx", "--processor", "tiny_int8", "-o", "{T}/b"],
             words=("--calibration",)),
        Case("quantize-no-calibration", ["quantize", "{W}/net.onnx", "--processor", "tiny_int8"],
             words=("--calibration",)),
        Case("quantize-fp32-processor", [*QUANT, "{W}/calib.npy", "--processor", "tiny_fp32"], words=("fp32",)),
        Case("quantize-labels-without-validate", [*QUANT, "{W}/calib.npy", "--labels", "{W}/calib.npy"],
             words=("--validate",)),
        Case("quantize-validate-nan", [*QUANT, "{W}/calib.npy", "--validate", "{W}/nan.npy"], words=("frame 2",)),
        Case("quantize-validate-uint8", [*QUANT, "{W}/calib.npy", "--validate", "{W}/uint8.npy"],
             words=("--input-scale",)),
        Case("quantize-labels-float", [*QUANT, "{W}/calib.npy", "--validate", "{W}/x.npy", "--labels",
                                       "{W}/calib.npy"], words=("labels",)),
        Case("quantize-labels-missing", [*QUANT, "{W}/calib.npy", "--validate", "{W}/x.npy", "--labels",
                                         "{W}/nolabels.npy"], words=("nolabels.npy",)),
        Case("compile-fp32-ignores-calibration", ["compile", "{W}/net.onnx", "--processor", "tiny_fp32",
                                                  "--calibration", "{W}/calib.npy", "-o", "{T}/b"], code=0,
             words=("not used",), changes=("b",)),
    ]
    return cases + accepted


def _model_cases() -> list[Case]:
    models = {  # file: words
        "nan_weight": ("'w'", "NaN", "conv0"), "inf_weight": ("'w'", "Inf"), "nan_bias": ("'b'", "NaN"),
        "stride0": ("conv0", "strides"), "neg_pads": ("conv0", "pads"), "dilation0": ("conv0", "dilations"),
        "kernel_too_large": ("conv0", "kernel"), "pool_too_large": ("pool0", "kernel"),
        "pool_stride0": ("pool0", "strides"), "pool_no_kernel": ("pool0", "kernel_shape"),
        "zero_channels": ("zero",), "zero_width": ("size 0",), "batch0": ("batch",), "batch2": ("batch",),
        "dynamic_h": ("'x'", "static"), "no_shape": ("'x'", "shape"), "scalar_input": ("'x'", "scalar"),
        "int_input": ("'x'", "UINT8"), "two_inputs": ("2 network inputs",), "no_nodes": ("no nodes",),
        "custom_op": ("fancy0", "FancyPool"), "control_flow": ("if0", "If"), "unknown_attr": ("conv0", "flavour"),
        "opset_old": ("opset 6",), "opset_new": ("opset 40",), "const_output": ("'k'", "constant"),
        "undefined_input": ("ghost",), "group_mismatch": ("conv0", "group"), "weight_shape": ("conv0",),
        "empty": ("empty.onnx", "empty"), "garbage": ("garbage.onnx",), "truncated": ("truncated.onnx",),
        "text": ("text.onnx",), "model_dir": ("model_dir.onnx", "directory"), "missing": ("missing.onnx",),
    }
    cases = []
    for name, words in models.items():
        for prefix, argv in (
                ("compile", ["compile", f"{{W}}/{name}.onnx", "--processor", "tiny_int8", "--calibration",
                             "{W}/calib.npy", "-o", "{T}/b"]),
                ("estimate", ["estimate", f"{{W}}/{name}.onnx", "--processor", "tiny_int8"]),
                ("quantize", ["quantize", f"{{W}}/{name}.onnx", "--processor", "tiny_int8", "--calibration",
                              "{W}/calib.npy"])):
            if prefix != "compile" and name not in ("nan_weight", "stride0", "kernel_too_large", "zero_channels",
                                                   "model_dir", "no_nodes", "empty", "neg_pads"):
                continue
            cases.append(Case(f"{prefix}-model-{name}", argv, words=words))
    cases += [
        Case("compile-too-big-for-ddr", ["compile", "{W}/too_big.onnx", "--processor", "{W}/cfg_small_ddr.json",
                                         "--calibration", "{W}/calib.npy", "-o", "{T}/b"], words=("DDR", "MiB")),
        Case("compile-fp32-nan-weight", ["compile", "{W}/nan_weight.onnx", "--processor", "tiny_fp32", "-o",
                                         "{T}/b"], words=("'w'",)),
        Case("compile-hostonly-notes", ["compile", "{W}/hostonly.onnx", "--processor", "tiny_int8", "--calibration",
                                        "{W}/calib.npy", "-o", "{T}/b"], code=0, words=("runs on the host",),
             changes=("b",)),
        Case("estimate-hostonly-no-inf", ["estimate", "{W}/hostonly.onnx", "--processor", "tiny_int8"], code=0,
             words=("no frames/s",)),
        Case("run-hostonly-profile", ["run", "{W}/hostbundle", "--input", "{W}/x.npy", "--profile"], code=0,
             words=("runs on the host",)),
    ]
    return cases


def _config_cases() -> list[Case]:
    cases = []
    for field_name in BAD_FIELDS:
        spec = f"{{W}}/cfg_{field_name}.json"
        cases.append(Case(f"compile-config-{field_name}", ["compile", "{W}/net.onnx", "--processor", spec,
                                                            "--calibration", "{W}/calib.npy", "-o", "{T}/b"],
                          words=(f"ProcessorConfig.{field_name}",)))
        cases.append(Case(f"generate-config-{field_name}", ["generate", "--processor", spec, "-o", "{T}/hdl"],
                          words=(f"ProcessorConfig.{field_name}",)))
        if field_name in ("dtype", "conv_ic_lanes", "ddr_size", "clock_mhz"):
            cases.append(Case(f"resources-config-{field_name}", ["resources", "--processor", spec, "--model"],
                              words=(f"ProcessorConfig.{field_name}",)))
            cases.append(Case(f"build-config-{field_name}", ["build", "--processor", spec, "-o", "{T}/plan"],
                              words=(f"ProcessorConfig.{field_name}",)))
    for name, words in (("unknown", ("lanes",)), ("notjson", ("not valid JSON",)), ("array", ("object",)),
                        ("empty", ("not valid JSON",))):
        for cmd in (["generate", "-o", "{T}/hdl"], ["compile", "{W}/net.onnx", "-o", "{T}/b", "--calibration",
                                                     "{W}/calib.npy"]):
            cases.append(Case(f"{cmd[0]}-config-{name}", [*cmd, "--processor", f"{{W}}/cfg_{name}.json"], words=words))
    cases += [
        Case("compile-processor-unknown", ["compile", "{W}/net.onnx", "--processor", "zcu104", "-o", "{T}/b",
                                           "--calibration", "{W}/calib.npy"], words=("zcu104", "tiny_int8")),
        Case("compile-processor-directory", ["compile", "{W}/net.onnx", "--processor", "{W}/adir", "-o", "{T}/b",
                                             "--calibration", "{W}/calib.npy"], words=("adir",)),
        Case("compile-processor-missing-json", ["compile", "{W}/net.onnx", "--processor", "{W}/nope.json", "-o",
                                                "{T}/b", "--calibration", "{W}/calib.npy"], words=("nope.json",)),
        Case("generate-processor-directory", ["generate", "--processor", "{W}/adir", "-o", "{T}/hdl"],
             words=("adir",)),
        Case("build-board-unknown", ["build", "--board", "arty", "--processor", "tiny_int8", "-o", "{T}/plan"],
             words=("arty", "zcu102")),
        Case("resources-board-unknown", ["resources", "--board", "arty", "--processor", "tiny_int8", "--model"],
             words=("arty",)),
        Case("run-target-bogus", ["run", "{W}/bundle", "--input", "{W}/x.npy", "--target", "asic"],
             words=("--target",)),
        Case("run-timeout-zero", ["run", "{W}/bundle", "--input", "{W}/x.npy", "--timeout", "0"],
             words=("--timeout",)),
        Case("run-fpga-without-board", ["run", "{W}/bundle", "--input", "{W}/x.npy", "--target", "fpga"],
             words=("uio",)),
        Case("run-processor-mismatch", ["run", "{W}/bundle", "--input", "{W}/x.npy", "--processor", "small_int8"],
             words=("compiled for processor",)),
        Case("run-processor-match", ["run", "{W}/bundle", "--input", "{W}/x.npy", "--processor", "{W}/cfg_tiny.json"],
             code=0, words=("argmax",)),
        Case("run-processor-unknown", ["run", "{W}/bundle", "--input", "{W}/x.npy", "--processor", "zcu104"],
             words=("zcu104",)),
    ]
    return cases


def _bundle_cases() -> list[Case]:
    cases = [Case(f"run-manifest-missing-{key}", ["run", "{T}/b", "--input", "{W}/x.npy"],
                  setup=_edit_manifest(_drop(key)), words=(f"'{key}'",), changes=("b",))
             for key in ("format", "isa_version", "hardware_hash", "config", "name", "inputs", "outputs", "tensors",
                         "views", "regions", "layers", "segments", "image_offset", "instr_offset", "instr_count",
                         "host_models", "blobs")]
    cases += [Case(f"run-manifest-type-{key}", ["run", "{T}/b", "--input", "{W}/x.npy"],
                   setup=_edit_manifest(_set(key, value)), words=(f"'{key}'",), changes=("b",))
              for key, value in (("instr_count", "12"), ("segments", {}), ("image_offset", -4), ("inputs", []),
                                 ("layers", "all"), ("tensors", [1]), ("host_models", ["x"]), ("config", None),
                                 ("instr_offset", True), ("blobs", []))]
    cases += [
        Case("run-manifest-empty-segments", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=_edit_manifest(_set("segments", [])), words=("segments", "empty"), changes=("b",)),
        Case("run-manifest-bad-segment-kind", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=_edit_manifest(lambda m: {**m, "segments": [{**m["segments"][0], "kind": "gpu"}]}),
             words=("gpu",), changes=("b",)),
        Case("run-manifest-segment-outside", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=_edit_manifest(lambda m: {**m, "segments": [{**m["segments"][0], "count": 10 ** 6}]}),
             words=("segments[0]",), changes=("b",)),
        Case("run-manifest-hash-edited", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=_edit_manifest(_set("hardware_hash", "deadbeef")), words=("hardware_hash",), changes=("b",)),
        Case("run-manifest-config-edited", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=_edit_manifest(lambda m: {**m, "config": {**m["config"], "conv_oc_lanes": 16}}),
             words=("hardware_hash",), changes=("b",)),
        Case("run-manifest-config-invalid", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=_edit_manifest(lambda m: {**m, "config": {**m["config"], "conv_ic_lanes": 3}}),
             words=("conv_ic_lanes",), changes=("b",)),
        Case("run-manifest-format-future", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=_edit_manifest(_set("format", 99)), words=("format 99",), changes=("b",)),
        Case("run-manifest-isa-future", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=_edit_manifest(_set("isa_version", 7)), words=("ISA 7",), changes=("b",)),
        Case("run-manifest-not-json", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=lambda T, W: (shutil.copytree(W / "bundle", T / "b"),
                                 (T / "b" / "manifest.json").write_text("{oops")),
             words=("manifest.json", "corrupt"), changes=("b",)),
        Case("run-manifest-array", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=lambda T, W: (shutil.copytree(W / "bundle", T / "b"),
                                 (T / "b" / "manifest.json").write_text("[]")),
             words=("manifest.json",), changes=("b",)),
        Case("run-manifest-missing-file", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=lambda T, W: (shutil.copytree(W / "bundle", T / "b"), (T / "b" / "manifest.json").unlink()),
             words=("manifest.json",), changes=("b",)),
        Case("run-image-truncated", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=_edit_image(lambda d: d[:len(d) // 2]), words=("image.bin", "bytes"), changes=("b",)),
        Case("run-image-empty", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=_edit_image(lambda d: b""), words=("image.bin",), changes=("b",)),
        Case("run-image-extended", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=_edit_image(lambda d: d + b"\0" * 32), words=("image.bin",), changes=("b",)),
        Case("run-image-flipped-bit", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=_edit_image(lambda d: d[:-5] + bytes([d[-5] ^ 1]) + d[-4:]), words=("image.bin", "modified"),
             changes=("b",)),
        Case("run-image-missing", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=lambda T, W: (shutil.copytree(W / "bundle", T / "b"), (T / "b" / "image.bin").unlink()),
             words=("image.bin", "missing"), changes=("b",)),
        Case("run-image-truncated-no-digest", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=lambda T, W: (_edit_manifest(lambda m: {k: v for k, v in m.items() if k != "blobs"} | {"format": 1})(
                 T, W), (T / "b" / "image.bin").write_bytes((T / "b" / "image.bin").read_bytes()[:64])),
             words=("image.bin", "truncated"), changes=("b",)),
        Case("run-host-model-missing", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=lambda T, W: (shutil.copytree(W / "hostbundle", T / "b"),
                                 [p.unlink() for p in (T / "b").glob("host_*.onnx")]),
             words=("host_0.onnx", "missing"), changes=("b",)),
        Case("run-bundle-is-file", ["run", "{W}/net.onnx", "--input", "{W}/x.npy"], words=("net.onnx", "file")),
        Case("run-bundle-missing", ["run", "{W}/nobundle", "--input", "{W}/x.npy"], words=("nobundle",)),
        Case("run-bundle-empty-dir", ["run", "{T}/b", "--input", "{W}/x.npy"], setup=_mkdir("b"),
             words=("manifest.json",), changes=()),
        Case("run-bundle-format1-accepted", ["run", "{T}/b", "--input", "{W}/x.npy"],
             setup=_edit_manifest(lambda m: {k: v for k, v in m.items() if k != "blobs"} | {"format": 1}),
             code=0, words=("argmax",), changes=("b",)),
    ]
    return cases


def _output_cases() -> list[Case]:
    comp = ["compile", "{W}/net.onnx", "--processor", "tiny_int8", "--calibration", "{W}/calib.npy", "-o"]
    return [
        Case("compile-over-bundle", [*comp, "{T}/b"], setup=_copy_bundle(), words=("exists", "--force")),
        Case("compile-over-bundle-force", [*comp, "{T}/b", "--force"], setup=_copy_bundle(), code=0,
             changes=("b",)),
        Case("compile-over-other-dir", [*comp, "{T}/d"], setup=_mkdir(files=("d/keep.txt",)),
             words=("not a previous bundle",)),
        Case("compile-over-other-dir-force", [*comp, "{T}/d", "--force"], setup=_mkdir(files=("d/keep.txt",)),
             words=("not a previous bundle",)),
        Case("compile-over-file", [*comp, "{T}/f"], setup=_mkdir(files=("f",)), words=("not a directory",)),
        Case("compile-over-file-force", [*comp, "{T}/f", "--force"], setup=_mkdir(files=("f",)),
             words=("not a directory",)),
        Case("compile-into-empty-dir", [*comp, "{T}/e"], setup=_mkdir("e"), code=0, changes=("e",)),
        Case("compile-parent-is-file", [*comp, "{T}/f/b"], setup=_mkdir(files=("f",)), words=("not a directory",)),
        Case("compile-missing-parents", [*comp, "{T}/new/deeper/b"], code=0, changes=("new",)),
        Case("compile-bad-model-over-bundle", ["compile", "{W}/nan_weight.onnx", "--processor", "tiny_int8",
                                               "--calibration", "{W}/calib.npy", "-o", "{T}/b", "--force"],
             setup=_copy_bundle(), words=("'w'",)),
        Case("run-output-exists", ["run", "{W}/bundle", "--input", "{W}/x.npy", "-o", "{T}/y.npz"],
             setup=_mkdir(files=("y.npz",)), words=("exists", "--force")),
        Case("run-output-force", ["run", "{W}/bundle", "--input", "{W}/x.npy", "-o", "{T}/y.npz", "--force"],
             setup=_mkdir(files=("y.npz",)), code=0, changes=("y.npz",)),
        Case("run-output-is-dir", ["run", "{W}/bundle", "--input", "{W}/x.npy", "-o", "{T}/y.npz"],
             setup=_mkdir("y.npz"), words=("directory",)),
        Case("run-output-suffix", ["run", "{W}/bundle", "--input", "{W}/x.npy", "-o", "{T}/y"], code=0,
             changes=("y.npz",)),
        Case("run-output-bad-input-first", ["run", "{W}/bundle", "--input", "{W}/nan.npy", "-o", "{T}/y.npz"],
             words=("frame 2",)),
        Case("run-trace-on-ref", ["run", "{W}/bundle", "--input", "{W}/x.npy", "--trace", "{T}/w.fst"],
             words=("--trace",)),
        Case("run-trace-exists", ["run", "{W}/bundle", "--input", "{W}/x.npy", "--target", "sim", "--trace",
                                  "{T}/w.fst"], setup=_mkdir(files=("w.fst",)), words=("w.fst", "exists")),
        Case("generate-over-dir", ["generate", "--processor", "tiny_int8", "-o", "{T}/hdl"],
             setup=_mkdir(files=("hdl/config.json",)), words=("exists", "--force")),
        Case("generate-over-other-dir-force", ["generate", "--processor", "tiny_int8", "-o", "{T}/hdl", "--force"],
             setup=_mkdir(files=("hdl/notes.txt",)), words=("config.json",)),
        Case("generate-over-file", ["generate", "--processor", "tiny_int8", "-o", "{T}/f"],
             setup=_mkdir(files=("f",)), words=("not a directory",)),
        Case("build-over-dir", ["build", "--processor", "tiny_int8", "-o", "{T}/plan"],
             setup=_mkdir(files=("plan/config.json",)), words=("exists", "--force")),
        Case("build-over-file", ["build", "--processor", "tiny_int8", "-o", "{T}/f"],
             setup=_mkdir(files=("f",)), words=("not a directory",)),
        Case("build-over-other-dir-force", ["build", "--processor", "tiny_int8", "-o", "{T}/plan", "--force"],
             setup=_mkdir(files=("plan/precious.txt",)), words=("config.json",)),
        Case("quantize-qdq-exists", [*QUANT, "{W}/calib.npy", "--qdq", "{T}/q.onnx"], setup=_mkdir(files=("q.onnx",)),
             words=("q.onnx", "exists")),
        Case("quantize-qdq-is-dir", [*QUANT, "{W}/calib.npy", "--qdq", "{T}/q"], setup=_mkdir("q"),
             words=("directory",)),
        Case("quantize-report-exists", [*QUANT, "{W}/calib.npy", "--report", "{T}/r"],
             setup=_mkdir(files=("r/0_conv.png",)), words=("exists", "--force")),
        Case("quantize-report-is-file", [*QUANT, "{W}/calib.npy", "--report", "{T}/r"], setup=_mkdir(files=("r",)),
             words=("not a directory",)),
        Case("quantize-qdq-bad-calibration", [*QUANT, "{W}/nan.npy", "--qdq", "{T}/q.onnx"], words=("sample 2",)),
        Case("quantize-qdq-force", [*QUANT, "{W}/calib.npy", "--qdq", "{T}/q.onnx", "--force"],
             setup=_mkdir(files=("q.onnx",)), code=0, changes=("q.onnx",)),
    ]


def _failure_cases() -> list[Case]:
    comp = ["compile", "{W}/net.onnx", "--processor", "tiny_int8", "--calibration", "{W}/calib.npy", "-o", "{T}/b"]
    return [
        Case("compile-interrupted-in-calibration", comp, code=130, words=("interrupted",),
             patch=_raise_in("dlproc.compiler.calibrate.calibrate", KeyboardInterrupt())),
        Case("compile-interrupted-while-writing", comp, code=130, words=("interrupted",),
             patch=_raise_in("pathlib.Path.write_bytes", KeyboardInterrupt())),
        Case("compile-interrupted-replacing", [*comp, "--force"], setup=_copy_bundle(), code=130,
             words=("interrupted",), patch=_raise_in("pathlib.Path.write_bytes", KeyboardInterrupt())),
        Case("compile-disk-full", comp, words=("No space left", "nothing was written"),
             patch=_raise_in("pathlib.Path.write_bytes", OSError(28, "No space left on device"))),
        Case("compile-disk-full-replacing", [*comp, "--force"], setup=_copy_bundle(), words=("No space left",),
             patch=_raise_in("pathlib.Path.write_bytes", OSError(28, "No space left on device"))),
        Case("run-output-disk-full", ["run", "{W}/bundle", "--input", "{W}/x.npy", "-o", "{T}/y.npz"],
             words=("No space left",), patch=_raise_in("numpy.savez", OSError(28, "No space left on device"))),
        Case("run-output-interrupted", ["run", "{W}/bundle", "--input", "{W}/x.npy", "-o", "{T}/y.npz"], code=130,
             patch=_raise_in("numpy.savez", KeyboardInterrupt())),
        Case("generate-interrupted", ["generate", "--processor", "tiny_int8", "-o", "{T}/hdl"], code=130,
             patch=_raise_in("amaranth.back.verilog.convert", KeyboardInterrupt())),
        Case("generate-interrupted-over-previous", ["generate", "--processor", "tiny_int8", "-o", "{T}/hdl",
                                                    "--force"], setup=_mkdir(files=("hdl/config.json",)), code=130,
             patch=_raise_in("amaranth.back.verilog.convert", KeyboardInterrupt())),
        Case("compile-internal-error", comp, code=1, words=("internal error", "-v", "boom"),
             patch=_raise_in("dlproc.runtime.workflow.Workflow.compile", RuntimeError("boom"))),
        Case("compile-internal-error-debug", comp, code=1, words=("boom",), env={"DLPROC_DEBUG": "0"},
             patch=_raise_in("dlproc.runtime.workflow.Workflow.compile", RuntimeError("boom"))),
        Case("compile-permission-denied-reading", comp, words=("Permission denied",),
             patch=_raise_in("dlproc.compiler.frontend.onnx.load", PermissionError(13, "Permission denied",
                                                                                 "net.onnx"))),
    ]


CASES = _data_cases() + _model_cases() + _config_cases() + _bundle_cases() + _output_cases() + _failure_cases()


def test_the_corpus_is_large_and_unique():
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, W: Path, tmp_path: Path, capsys, monkeypatch):
    check(case, W, tmp_path, capsys, monkeypatch)


# --------------------------------------------------------------------------------------------------- the extras
def test_verbose_shows_the_traceback(W, tmp_path, capsys, monkeypatch):
    for argv, env in ((["-v"], {}), ([], {"DLPROC_DEBUG": "1"})):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        code = main(["compile", str(W / "nan_weight.onnx"), "--processor", "tiny_int8", "--calibration",
                     str(W / "calib.npy"), "-o", str(tmp_path / "b"), *argv])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("dlproc compile: error:")
        assert not (tmp_path / "b").exists()


def test_bundle_directories_are_readable_by_others(W, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        assert main(["compile", str(W / "net.onnx"), "--processor", "tiny_int8", "--calibration",
                     str(W / "calib.npy"), "-o", str(tmp_path / "b")]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in (tmp_path / "b").iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["b"], "no temporary left beside it"


def test_force_replaces_a_bundle_whole(W, tmp_path, capsys):
    shutil.copytree(W / "bundle", tmp_path / "b")
    (tmp_path / "b" / "stale.txt").write_text("from an older compile")
    assert main(["compile", str(W / "net.onnx"), "--processor", "tiny_int8", "--calibration", str(W / "calib.npy"),
                 "-o", str(tmp_path / "b"), "--force"]) == 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(p.name for p in (W / "bundle").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_qdq_export_of_quantize_is_refused_clearly_by_compile(W, tmp_path, capsys):
    assert main(["quantize", str(W / "net.onnx"), "--processor", "tiny_int8", "--calibration", str(W / "calib.npy"),
                 "--qdq", str(tmp_path / "q.onnx")]) == 0
    capsys.readouterr()
    assert main(["compile", str(tmp_path / "q.onnx"), "--processor", "tiny_int8", "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "QDQ export" in err and "--per-tensor" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]


def _subprocess(code: str, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_ctrl_c_exits_130_quietly_and_writes_nothing(W, tmp_path):
    code = (f"import os, signal, sys\n"
            f"import dlproc.compiler.calibrate as c\n"
            f"real = c.calibrate\n"
            f"def slow(*a, **k):\n"
            f"    os.kill(os.getpid(), signal.SIGINT)\n"
            f"    return real(*a, **k)\n"
            f"c.calibrate = slow\n"
            f"from dlproc.runtime.cli import main\n"
            f"sys.exit(main(['compile', {str(W / 'net.onnx')!r}, '--processor', 'tiny_int8', '--calibration', "
            f"{str(W / 'calib.npy')!r}, '-o', 'b']))\n")
    p = _subprocess(code, tmp_path)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and err.strip() == "dlproc compile: interrupted"
    assert list(tmp_path.iterdir()) == []


def test_closed_pipe_exits_quietly(W, tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "dlproc.runtime.cli", "run", str(W / "bundle"), "--input",
                          str(W / "x.npy")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader (`| head`) is gone before the first line
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert p.returncode == 141, err
    assert err == ""



def test_the_api_refuses_alike(W, tmp_path):
    from dlproc import CompiledNetwork, Workflow
    from dlproc.errors import BundleError, CalibrationError, DlprocError, InputDataError, OutputError

    net = CompiledNetwork.load(W / "bundle")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a previous bundle"):
        net.save(tmp_path / "b", overwrite=True)
    assert (tmp_path / "b" / "keep.txt").read_text() == "mine"
    net.save(tmp_path / "c")
    with pytest.raises(OutputError, match="overwrite=True"):
        net.save(tmp_path / "c")
    net.save(tmp_path / "c", overwrite=True)
    assert CompiledNetwork.load(tmp_path / "c").image == net.image
    wf = Workflow(str(W / "net.onnx"), processor="tiny_int8")
    with pytest.raises(InputDataError, match="uint8"):
        wf.calibrate(np.load(W / "uint8.npy"))
    with pytest.raises(CalibrationError, match="sample 2"):
        wf.calibrate(np.load(W / "nan.npy"))
    with pytest.raises(CalibrationError, match="constant"):
        wf.calibrate(np.zeros((3, *SHAPE[1:]), np.float32))
    wf.calibrate(np.load(W / "calib.npy"))
    with pytest.raises(InputDataError, match="frame 1"):
        wf.predict(np.load(W / "inf.npy"))
    (tmp_path / "q.onnx").write_text("mine")
    with pytest.raises(OutputError, match="exists"):
        wf.export_qdq(tmp_path / "q.onnx")
    assert (tmp_path / "q.onnx").read_text() == "mine"
    assert issubclass(BundleError, DlprocError) and issubclass(BundleError, ValueError)
