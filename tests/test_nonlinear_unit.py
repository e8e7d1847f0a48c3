"""The nonlinear unit (ProcessorConfig.has_nonlinear_unit; golden model and compiler, int8): ISA rules, the golden
model's table lookup against numpy, the tables against the activation formulas, the fusion, networks against the
independent integer reference and the float evaluator, and the RTL targets refusing the configuration."""

import math

import numpy as np
import pytest
from edge_nets import EDGE_NETS
from int_reference import run_int_reference

from dlproc.compiler.codegen import param_entry_bytes
from dlproc.compiler.float_ref import float_evaluator
from dlproc.compiler.graph import LUT_ACTIVATIONS, Activation, Requant
from dlproc.compiler.quantize import activation_lut
from dlproc.processor.config import ConfigError, ProcessorConfig
from dlproc.processor.generate import generate
from dlproc.processor.isa import Buffer, ErrorCode, GemmMode, InstructionSet
from dlproc.processor.rules import violation
from dlproc.runtime.workflow import Workflow
from dlproc.sim.golden import GoldenModel, HazardError, RunResult

PLAIN = ProcessorConfig.preset("tiny_int8")
CFG = PLAIN.replace(has_nonlinear_unit=True)


def test_rules_allow_the_unit_only_when_the_processor_has_it():
    for cfg, legal in ((PLAIN, False), (CFG, True)):
        isa = InstructionSet(cfg)
        lut_load = isa.Load(buffer=Buffer.LUT, buf_addr=0, ddr_addr=0, len0=256, n1=1, n2=1)
        gemm = isa.Gemm(mode=GemmMode.SUM, finalize=1, lut=1, r0=1, r1=1, r2=1, s0=1, s1=1)
        post = isa.Post(n=1, lut=1)
        for ins in (lut_load, gemm, post):
            assert (violation(ins, cfg) is None) == legal, (cfg.has_nonlinear_unit, str(ins))
    isa = InstructionSet(CFG)
    too_long = isa.Load(buffer=Buffer.LUT, buf_addr=4, ddr_addr=0, len0=256, n1=1, n2=1)
    assert "overflows buffer" in violation(too_long, CFG)


def _program(table: np.ndarray, acc_values: np.ndarray, *, sync: bool = True):
    """LOAD input, param and LUT; GEMM SUM (imm 1) finalize with lut; STORE; END. Returns (words, ddr)."""
    isa = InstructionSet(CFG)
    ci, co = CFG.conv_ic_lanes, CFG.conv_oc_lanes
    n = len(acc_values)
    ddr = np.zeros(1 << 16, np.uint8)
    inp = np.asarray(acc_values, np.int8).reshape(n, ci)
    rq = Requant(bias=np.zeros(co, np.int32), mult_pos=np.ones(co, np.int64), mult_neg=np.ones(co, np.int64),
                 shift=np.zeros(co, np.int64))
    par = np.frombuffer(param_entry_bytes(CFG, rq, 0, co), np.uint8)
    ddr[0x1000:0x1000 + inp.size] = inp.view(np.uint8).ravel()
    ddr[0x2000:0x2000 + par.size] = par
    ddr[0x3000:0x3100] = np.asarray(table, np.int8).view(np.uint8)
    loads = [isa.Load(buffer=Buffer.INPUT, buf_addr=0, ddr_addr=0x1000, len0=inp.size, n1=1, n2=1),
             isa.Load(buffer=Buffer.PARAM, buf_addr=0, ddr_addr=0x2000, len0=par.size, n1=1, n2=1),
             isa.Load(buffer=Buffer.LUT, buf_addr=0, ddr_addr=0x3000, len0=256, n1=1, n2=1)]
    gemm = isa.Gemm(mode=GemmMode.SUM, overwrite=1, finalize=1, lut=1, imm=1, r0=1, r1=1, r2=1, s0=1, s1=n, si1=1)
    store = isa.Store(buf_addr=0, ddr_addr=0x4000, n0=n, n1=1, n2=1)
    words = [i.encode() for i in loads + ([isa.Sync()] if sync else []) + [gemm, isa.Sync(), store, isa.End()]]
    blob = isa.to_bytes(words)
    ddr[:len(blob)] = np.frombuffer(blob, np.uint8)
    return words, ddr


def test_golden_model_maps_every_int8_value_through_the_table():
    rng = np.random.default_rng(3)
    table = rng.integers(-128, 128, 256).astype(np.int8)
    values = np.arange(-128, 128).reshape(-1, CFG.conv_ic_lanes)   # every int8 value once
    words, ddr = _program(table, values)
    res = GoldenModel(CFG).run(ddr, 0, len(words))
    assert res.error == ErrorCode.NONE
    out = ddr[0x4000:0x4000 + 256].view(np.int8)
    np.testing.assert_array_equal(out, table[np.arange(-128, 128) + 128])


def test_table_load_racing_a_lookup_is_a_hazard():
    words, ddr = _program(np.zeros(256, np.int8), np.zeros((4, CFG.conv_ic_lanes)), sync=False)
    with pytest.raises(HazardError, match="LUT|INPUT|PARAM"):
        GoldenModel(CFG).run(ddr, 0, len(words))


def _formula(kind: str, x: float) -> float:
    sig = 1 / (1 + math.exp(-x))
    return {"sigmoid": sig, "tanh": math.tanh(x), "silu": x * sig,
            "hard_sigmoid": min(1.0, max(0.0, 0.25 * x + 0.4)),
            "hard_swish": x * min(6.0, max(0.0, x + 3)) / 6,
            "lrn_scale": (2.0 + 0.5 * max(x, 0.0)) ** -0.75}[kind]


@pytest.mark.parametrize("kind", LUT_ACTIVATIONS)
def test_table_is_the_quantized_activation(kind):
    s_in, s_out = 8 / 127, 1.3 / 127
    act = {"hard_sigmoid": Activation(kind, alpha=0.25, beta=0.4),
           "lrn_scale": Activation(kind, alpha=0.5, beta=0.75, k=2.0)}.get(kind, Activation(kind))
    table = activation_lut(act, s_in, s_out)
    assert table.dtype == np.int8 and table.shape == (256,)
    for i, q in enumerate(range(-128, 128)):
        want = _formula(kind, q * s_in) / s_out
        assert abs(table[i] - min(127, max(-128, want))) <= 0.5 + 1e-9, (kind, q)


def test_fusion_needs_the_unit_and_fuses_every_pattern():
    model, _ = EDGE_NETS["lut_activations"]()
    plain = Workflow(model, processor=PLAIN).float_graph
    fused = Workflow(model, processor=CFG).float_graph
    assert sorted(la.attrs["op_type"] for la in plain.layers if la.target == "host") == \
        ["HardSigmoid", "HardSwish", "Mul", "Mul", "Sigmoid", "Sigmoid", "Sigmoid", "Sigmoid", "Tanh", "Tanh"]
    acts = [la.act.kind for la in fused.layers if la.target == "hw"]
    assert acts == ["sigmoid", "tanh", "hard_sigmoid", "hard_swish", "silu", "silu", "none", "none", "tanh"]
    hs = next(la for la in fused.layers if la.act.kind == "hard_sigmoid")
    assert (hs.act.alpha, hs.act.beta) == (0.25, float(np.float32(0.4)))  # ONNX float attributes
    # the Sigmoid whose input the Add also reads stays on the host
    assert [la.attrs["op_type"] for la in fused.layers if la.target == "host"] == ["Sigmoid"]


def _workflow(netname: str) -> tuple[Workflow, np.ndarray]:
    model, shape = EDGE_NETS[netname]()
    rng = np.random.default_rng(len(netname) + 7)
    wf = Workflow(model, processor=CFG, target="ref")
    wf.calibrate(rng.standard_normal((16, *shape[1:])).astype(np.float32))
    wf.compile()
    return wf, rng.standard_normal((3, *shape[1:])).astype(np.float32)


@pytest.mark.parametrize("netname", list(EDGE_NETS))
def test_golden_model_equals_the_integer_reference(netname):
    wf, x = _workflow(netname)
    assert any(la.quant is not None and la.quant.lut is not None for la in wf.graph.layers)
    acts = wf.activations(x)
    compared = 0
    for i, frame in enumerate(x):
        ref = run_int_reference(wf.graph, frame[None])
        for layer in wf.graph.layers:
            tensor = layer.outputs[0]
            if layer.target != "hw" or tensor not in ref:
                continue
            got = acts[layer.name][i:i + 1].astype(np.float64) / wf.graph.tensors[tensor].scale
            np.testing.assert_array_equal(np.round(got), ref[tensor].reshape(got.shape), err_msg=layer.name)
            compared += 1
    assert compared >= len(x) * 3


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("netname", list(EDGE_NETS))
def test_quantization_quality_against_the_float_evaluator(netname):
    model, _ = EDGE_NETS[netname]()
    wf, x = _workflow(netname)
    got = np.asarray(wf.predict(x), np.float64)
    reference = float_evaluator(model)
    want = np.concatenate([reference.run(None, {"input": f[None]})[0] for f in x])
    assert _cosine(got, want) >= 0.99


def test_edge_blocks_run_without_host_layers_with_the_unit():
    for netname in ("mobilenet_v3_block", "efficientnet_block"):
        model, _ = EDGE_NETS[netname]()
        assert any(la.target == "host" for la in Workflow(model, processor=PLAIN).float_graph.layers)
        graph = Workflow(model, processor=CFG).float_graph
        assert [la.name for la in graph.layers if la.target == "host"] == [], netname
        assert sum(la.op == "mul" for la in graph.layers) == 1, netname


def test_elementwise_mul_layers():
    model, _ = EDGE_NETS["elementwise_mul"]()
    graph = Workflow(model, processor=CFG).float_graph
    muls = [la for la in graph.layers if la.op == "mul"]
    shapes = [tuple(graph.tensors[v].shape for v in la.inputs) for la in muls]
    assert shapes == [((10, 18, 21), (10, 18, 21)), ((10, 18, 21), (10, 1, 1)), ((6, 1, 1), (6, 1, 1)),
                      ((6, 1, 1), (6, 1, 1))]
    assert muls[-1].inputs[0] == muls[-1].inputs[1]                    # Mul(p, p)
    assert [la.act.kind for la in muls] == ["none"] * 4  # the ReLU after a Mul: a 1x1 depthwise conv
    assert [la.attrs["op_type"] for la in graph.layers if la.target == "host"] == ["Flatten"]
    assert not any(la.op == "mul" for la in Workflow(model, processor=PLAIN).float_graph.layers)


def test_golden_mul_mode_multiplies_and_wraps():
    isa = InstructionSet(CFG)
    ci = CFG.conv_ic_lanes
    rng = np.random.default_rng(9)
    a = rng.integers(-128, 128, (6, ci)).astype(np.int8)
    g = rng.integers(-128, 128, (2, ci)).astype(np.int8)
    model = GoldenModel(CFG)
    model.inp[:6], model.inp[6:8] = a, g
    # two reduction steps (r0 = 2, gate entries 6 and 7 read at every pixel): acc = a * g6 * g7
    model.execute(isa.Gemm(mode=GemmMode.SUM, overwrite=1, imm=1, r0=1, r1=1, r2=1, s0=1, s1=6, si1=1), None, 0,
                  RunResult())
    model.execute(isa.Gemm(mode=GemmMode.MUL, inp_base=6, r0=2, ri0=1, r1=1, r2=1, s0=1, s1=6, si1=0), None, 0,
                  RunResult())
    want = a.astype(np.int64) * g[0] * g[1]
    np.testing.assert_array_equal(model.acc[:6, :ci], want)
    assert not model.acc[:6, ci:].any()


def test_rtl_targets_and_gateware_refuse_the_unit(tmp_path):
    model, _ = EDGE_NETS["lut_activations"]()
    for target in ("sim", "fpga"):
        with pytest.raises(ValueError, match="no nonlinear unit"):
            Workflow(model, processor=CFG, target=target)
    with pytest.raises(ConfigError, match="gateware has no nonlinear unit"):
        generate(CFG, tmp_path)
    with pytest.raises(ConfigError, match="has_nonlinear_unit"):
        ProcessorConfig.preset("tiny_fp32").replace(has_nonlinear_unit=True)
    for name in ("tiny_int8", "small_int8", "zcu102_int8", "tiny_fp32", "zcu102_fp32"):
        assert not ProcessorConfig.preset(name).has_nonlinear_unit


def test_lrn_becomes_square_window_sum_and_scale():
    model, _ = EDGE_NETS["lrn"]()
    assert [la.attrs["op_type"] for la in Workflow(model, processor=PLAIN).float_graph.layers
            if la.target == "host"] == ["LRN", "LRN"]
    graph = Workflow(model, processor=CFG).float_graph
    assert not [la for la in graph.layers if la.target == "host"]
    ops = [(la.op, la.act.kind) for la in graph.layers]
    lrn = [("mul", "none"), ("conv", "lrn_scale"), ("mul", "none")]
    assert ops == [("conv", "relu"), *lrn, ("conv", "relu"), *lrn, ("conv", "none")]
    window = [la for la in graph.layers if la.act.kind == "lrn_scale"][1]
    band = window.weight[:, :, 0, 0]
    assert band.shape == (13, 13) and band[0, :3].tolist() == [1, 1, 0] and band[5, 3:8].tolist() == [0, 1, 1, 1, 0]
    assert (window.act.alpha, window.act.beta, window.act.k) == pytest.approx((2.0 / 3, 0.75, 2.0))
