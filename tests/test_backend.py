"""Back end (tiling, code generation, DDR layout) on hand-built quantized layers, through the golden model.

The references here are direct numpy computations of each layer on whole tensors (no tiling): they share no code
with the compiler back end or the golden model.
"""

import numpy as np
import pytest
from helpers import stable_seed

from dlproc.compiler.errors import CompileError
from dlproc.compiler.graph import Graph, Layer, LayerQuant, Requant, TensorInfo
from dlproc.compiler.network import BundleError, CompiledNetwork, compile_graph
from dlproc.processor.config import ProcessorConfig
from dlproc.runtime.driver import DeviceMismatch, Driver
from dlproc.sim.golden import GoldenDevice

CONFIGS = ["tiny_int8", "small_int8"]


def post(acc, r):
    """Independent statement of the post-processing rule (docs/numerics.md)."""
    sh = (acc.shape[0],) + (1,) * (acc.ndim - 1)
    v = acc.astype(np.int64) + np.asarray(r.bias, np.int64).reshape(sh)
    v = (v + 2**31) % 2**32 - 2**31
    m = np.where(v >= 0, np.asarray(r.mult_pos).reshape(sh), np.asarray(r.mult_neg).reshape(sh))
    t = v * m
    s = np.asarray(r.shift, np.int64).reshape(sh)
    t = np.where(s > 0, np.floor_divide(t + np.where(s > 0, 2 ** np.maximum(s - 1, 0), 0), 2 ** s), t)
    return np.clip(t, r.lo, r.hi).astype(np.int8)


def conv_ref(x, w, r, stride, pads, dil, group):
    C, H, W = x.shape
    OC, ICg, kh, kw = w.shape
    pt, pl, pb, pr = pads
    xp = np.pad(x.astype(np.int64), ((0, 0), (pt, pb), (pl, pr)))
    Ho = (H + pt + pb - dil[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (W + pl + pr - dil[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((OC, Ho, Wo), np.int64)
    OCg = OC // group
    for oc in range(OC):
        g = oc // OCg
        for ky in range(kh):
            for kx in range(kw):
                y0, x0 = ky * dil[0], kx * dil[1]
                patch = xp[g * ICg:(g + 1) * ICg, y0:y0 + stride[0] * (Ho - 1) + 1:stride[0],
                           x0:x0 + stride[1] * (Wo - 1) + 1:stride[1]]
                out[oc] += np.einsum("chw,c->hw", patch, w[oc, :, ky, kx].astype(np.int64))
    return post(out, r)


def rand_requant(rng, n, shift=14, lo=-128, hi=127):
    return Requant(rng.integers(-3000, 3000, n), rng.integers(200, 30000, n), rng.integers(-3000, 30000, n),
                   np.full(n, shift), lo, hi)


def ident(n, shift=0, lo=-128, hi=127):
    return Requant(np.zeros(n, np.int64), np.ones(n, np.int64), np.ones(n, np.int64), np.full(n, shift), lo, hi)


def T(name, shape, onnx_shape=None):
    return TensorInfo(name, shape, onnx_shape or (1, *shape), 0.1)


def run(cfg, graph, xq):
    net = compile_graph(graph, cfg)
    drv = Driver(GoldenDevice(cfg))
    drv.load(net)
    _, _, ints = drv.infer(xq.astype(np.float32) * 0.1, keep_int=True)
    return net, ints


CONV_CASES = [  # C, H, W, OC, k, stride, pad, dilation, group
    (5, 15, 17, 13, 3, (1, 1), 1, (1, 1), 1),      # channels not multiples of the lanes, odd sizes
    (16, 32, 32, 24, 3, (2, 2), 1, (1, 1), 1),     # stride 2, needs tiling on both configurations
    (12, 9, 11, 12, 3, (1, 1), 1, (1, 1), 12),     # depthwise
    (6, 13, 13, 8, 5, (1, 1), 4, (2, 2), 2),       # grouped, dilated
    (3, 23, 23, 10, 11, (4, 4), 2, (1, 1), 1),     # 11x11 kernel larger than half the tiny weight buffer
    (64, 20, 20, 40, 1, (1, 1), 0, (1, 1), 1),     # 1x1 with a reduction split over chunks on tiny
    (7, 1, 1, 9, 1, (1, 1), 0, (1, 1), 1),         # 1x1 spatial (accumulator hazards every step in RTL)
]


@pytest.mark.parametrize("cfgname", CONFIGS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c[:5])))
def test_conv_layers_are_exact(cfgname, case):
    C, H, W, OC, k, st, pad, dil, g = case
    rng = np.random.default_rng(stable_seed(case))
    cfg = ProcessorConfig.preset(cfgname)
    w = rng.integers(-127, 128, (OC, C // g, k, k)).astype(np.int8)
    r = rand_requant(rng, OC)
    pads = (pad,) * 4
    Ho, Wo = (H + 2 * pad - dil[0] * (k - 1) - 1) // st[0] + 1, (W + 2 * pad - dil[1] * (k - 1) - 1) // st[1] + 1
    layer = Layer("conv0", "conv", ["x"], ["y"], quant=LayerQuant(w, None, r),
                  attrs=dict(kernel=(k, k), stride=st, pads=pads, dilation=dil, group=g))
    graph = Graph("t", ["x"], ["y"], {"x": T("x", (C, H, W)), "y": T("y", (OC, Ho, Wo))}, [layer])
    xq = rng.integers(-128, 128, (C, H, W)).astype(np.int8)
    _, ints = run(cfg, graph, xq)
    np.testing.assert_array_equal(ints["y"], conv_ref(xq, w, r, st, pads, dil, g))


@pytest.mark.parametrize("cfgname", CONFIGS)
def test_pooling_add_fc_concat_are_exact(cfgname):
    cfg = ProcessorConfig.preset(cfgname)
    rng = np.random.default_rng(5)
    # max pool 3x3 stride 2 pad 1 on a non-negative input
    C, H, W = 13, 15, 17
    xq = rng.integers(0, 128, (C, H, W)).astype(np.int8)
    Ho, Wo = (H - 1) // 2 + 1, (W - 1) // 2 + 1
    g = Graph("p", ["x"], ["y"], {"x": T("x", (C, H, W)), "y": T("y", (C, Ho, Wo))},
              [Layer("mp", "maxpool", ["x"], ["y"], quant=LayerQuant(None, None, ident(C)),
                     attrs=dict(kernel=(3, 3), stride=(2, 2), pads=(1, 1, 1, 1)))])
    xp = np.pad(xq.astype(int), ((0, 0), (1, 1), (1, 1)))
    ref = np.max([xp[:, ky:ky + 2 * (Ho - 1) + 1:2, kx:kx + 2 * (Wo - 1) + 1:2] for ky in range(3) for kx in range(3)],
                 axis=0)
    np.testing.assert_array_equal(run(cfg, g, xq)[1]["y"], ref)
    # average pool 2x2 stride 2
    xq = rng.integers(-128, 128, (C, H, W)).astype(np.int8)
    Ho, Wo = H // 2, W // 2
    r = ident(C, shift=2)
    g = Graph("p", ["x"], ["y"], {"x": T("x", (C, H, W)), "y": T("y", (C, Ho, Wo))},
              [Layer("ap", "avgpool", ["x"], ["y"], quant=LayerQuant(None, None, r, [1]),
                     attrs=dict(kernel=(2, 2), stride=(2, 2), pads=(0, 0, 0, 0)))])
    s = sum(xq[:, ky:ky + 2 * (Ho - 1) + 1:2, kx:kx + 2 * (Wo - 1) + 1:2].astype(int)
            for ky in range(2) for kx in range(2))
    np.testing.assert_array_equal(run(cfg, g, xq)[1]["y"], post(s, r))
    # global average pool
    C, H, W = 37, 9, 7
    xq = rng.integers(-128, 128, (C, H, W)).astype(np.int8)
    r = ident(C, shift=6)
    g = Graph("g", ["x"], ["y"], {"x": T("x", (C, H, W)), "y": T("y", (C, 1, 1))},
              [Layer("gap", "gap", ["x"], ["y"], quant=LayerQuant(None, None, r, [1]))])
    np.testing.assert_array_equal(run(cfg, g, xq)[1]["y"], post(xq.astype(int).sum((1, 2), keepdims=True), r))
    # residual add after a 1x1 conv, with ReLU
    C, H, W = 11, 13, 9
    xq = rng.integers(-128, 128, (C, H, W)).astype(np.int8)
    w = rng.integers(-127, 128, (C, C, 1, 1)).astype(np.int8)
    rc, ra = rand_requant(rng, C), ident(C, shift=13, lo=0)
    g = Graph("a", ["x"], ["y"], {"x": T("x", (C, H, W)), "c": T("c", (C, H, W)), "y": T("y", (C, H, W))}, [
        Layer("cv", "conv", ["x"], ["c"], quant=LayerQuant(w, None, rc),
              attrs=dict(kernel=(1, 1), stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), group=1)),
        Layer("add", "add", ["x", "c"], ["y"], quant=LayerQuant(None, None, ra, [9000, -7000]))])
    ints = run(cfg, g, xq)[1]
    cref = post(np.einsum("oi,ihw->ohw", w[:, :, 0, 0].astype(int), xq.astype(int)), rc)
    np.testing.assert_array_equal(ints["c"], cref)
    np.testing.assert_array_equal(ints["y"], post(xq.astype(int) * 9000 + cref.astype(int) * -7000, ra))
    # fully connected on a (C, H, W) input, outputs not a multiple of the lanes
    C, H, W, N = 10, 5, 3, 21
    xq = rng.integers(-128, 128, (C, H, W)).astype(np.int8)
    wf = rng.integers(-127, 128, (N, C * H * W)).astype(np.int8)
    rf = rand_requant(rng, N, shift=15)
    g = Graph("f", ["x"], ["y"], {"x": T("x", (C, H, W)), "y": T("y", (N, 1, 1), (1, N))},
              [Layer("fc", "fc", ["x"], ["y"], quant=LayerQuant(wf, None, rf))])
    ref = post(wf.astype(int) @ xq.reshape(-1).astype(int), rf)
    np.testing.assert_array_equal(run(cfg, g, xq)[1]["y"][:, 0, 0], ref)


@pytest.mark.parametrize("cfgname", CONFIGS)
def test_concat_is_zero_copy_and_exact(cfgname):
    cfg = ProcessorConfig.preset(cfgname)
    rng = np.random.default_rng(6)
    C, H, W = 6, 7, 8
    B = cfg.channel_block
    c1, c2 = 2 * B, 5
    xq = rng.integers(-128, 128, (C, H, W)).astype(np.int8)
    w1 = rng.integers(-127, 128, (c1, C, 1, 1)).astype(np.int8)
    w2 = rng.integers(-127, 128, (c2, C, 3, 3)).astype(np.int8)
    w3 = rng.integers(-127, 128, (4, c1 + c2, 3, 3)).astype(np.int8)
    r1, r2, r3 = rand_requant(rng, c1), rand_requant(rng, c2), rand_requant(rng, 4)

    def cv(k, p):
        return dict(kernel=(k, k), stride=(1, 1), pads=(p,) * 4, dilation=(1, 1), group=1)

    tensors = {"x": T("x", (C, H, W)), "a": T("a", (c1, H, W)), "b": T("b", (c2, H, W)),
               "cat": T("cat", (c1 + c2, H, W)), "y": T("y", (4, H, W))}
    g = Graph("c", ["x"], ["y"], tensors, [
        Layer("c1", "conv", ["x"], ["a"], attrs=cv(1, 0), quant=LayerQuant(w1, None, r1)),
        Layer("c2", "conv", ["x"], ["b"], attrs=cv(3, 1), quant=LayerQuant(w2, None, r2)),
        Layer("cat", "concat", ["a", "b"], ["cat"], attrs=dict(axis=1)),
        Layer("c3", "conv", ["cat"], ["y"], attrs=cv(3, 1), quant=LayerQuant(w3, None, r3))])
    net, ints = run(cfg, g, xq)
    a = conv_ref(xq, w1, r1, (1, 1), (0,) * 4, (1, 1), 1)
    b = conv_ref(xq, w2, r2, (1, 1), (1,) * 4, (1, 1), 1)
    np.testing.assert_array_equal(ints["cat"], np.concatenate([a, b]))
    np.testing.assert_array_equal(ints["y"], conv_ref(np.concatenate([a, b]), w3, r3, (1, 1), (1,) * 4, (1, 1), 1))
    assert net.layers[2].instr_count == 2  # only its SYNC and MARK: no data movement


def _one_conv_graph():
    rng = np.random.default_rng(7)
    w = rng.integers(-127, 128, (8, 4, 3, 3)).astype(np.int8)
    layer = Layer("conv0", "conv", ["x"], ["y"], quant=LayerQuant(w, None, rand_requant(rng, 8)),
                  attrs=dict(kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), group=1))
    return Graph("t", ["x"], ["y"], {"x": T("x", (4, 8, 8)), "y": T("y", (8, 8, 8))}, [layer])


def test_bundle_round_trip_and_configuration_mismatch(tmp_path):
    cfg = ProcessorConfig.preset("tiny_int8")
    net = compile_graph(_one_conv_graph(), cfg)
    path = net.save(tmp_path / "bundle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temporary leftovers
    back = CompiledNetwork.load(path, config=cfg)
    assert back.image == net.image and back.instructions() == net.instructions()
    assert "DDR memory map" in back.report() and "conv0" in back.report()
    other = ProcessorConfig.preset("small_int8")
    with pytest.raises(BundleError, match="compiled for processor"):
        CompiledNetwork.load(path, config=other)
    with pytest.raises(DeviceMismatch, match="recompile"):
        Driver(GoldenDevice(other)).load(back)
    with pytest.raises(BundleError, match="not a dlproc bundle"):
        CompiledNetwork.load(tmp_path)


def test_network_too_large_for_the_ddr_window_is_refused():
    cfg = ProcessorConfig.preset("tiny_int8").replace(ddr_size=1 << 16)
    g = _one_conv_graph()
    g.tensors["x"] = T("x", (4, 120, 120))
    g.tensors["y"] = T("y", (8, 120, 120))
    with pytest.raises(CompileError, match="ddr_size"):
        compile_graph(g, cfg)


def test_unquantized_graph_is_refused():
    g = _one_conv_graph()
    g.layers[0].quant = None
    with pytest.raises(CompileError, match="calibrate before compiling"):
        compile_graph(g, ProcessorConfig.preset("tiny_int8"))


def test_a_racy_or_illegal_program_is_a_compile_error(monkeypatch):
    """The compiler verifies what it emits: a schedule without its SYNCs, or an out-of-range GEMM, never reaches a
    bundle (on "sim" or "fpga" it would be a silently wrong answer, not a golden-model HazardError)."""
    from dlproc.compiler.codegen import CodeGenerator
    from dlproc.processor.isa import Opcode

    cfg = ProcessorConfig.preset("tiny_int8")
    compile_graph(_one_conv_graph(), cfg)   # the real schedule verifies
    run_steps = CodeGenerator._run_steps

    def without_syncs(self, steps):
        start = len(self.words)
        run_steps(self, steps)
        self.words[start:] = [w for w in self.words[start:] if self.isa.decode(w).opcode != Opcode.SYNC]

    monkeypatch.setattr(CodeGenerator, "_run_steps", without_syncs)
    with pytest.raises(CompileError, match="both touch .* and one writes"):
        compile_graph(_one_conv_graph(), cfg)

    def out_of_range(self, steps):
        run_steps(self, steps)
        self.emit(self.isa.Gemm(r0=2, r1=1, r2=1, s0=1, s1=1, inp_base=cfg.input_entries - 1, ri0=1))

    monkeypatch.setattr(CodeGenerator, "_run_steps", out_of_range)
    with pytest.raises(CompileError, match="instruction .*GEMM reads input entries past the buffer"):
        compile_graph(_one_conv_graph(), cfg)
