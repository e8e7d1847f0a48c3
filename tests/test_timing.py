"""The timing check: the register-to-register walk on hand-built netlists, and the tiny_int8 baseline.

The walk is tested on small netlists written here in Yosys' JSON format, with the expected delay added up by hand
from the model's constants (``NOMINAL``'s fields), not from the walker. The baseline test synthesizes each tiny_int8
module (``synth_xilinx -family xcup``, cached by RTLIL digest) and fails when a module's worst path is more than
:data:`TOLERANCE_NS` worse than ``tests/recorded/timing_tiny_int8.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dlproc.boards.timing import NOMINAL, DelayModel, analyze_netlist, module_digest, module_rtlil, modules_for
from dlproc.processor.config import PRESETS, ProcessorConfig

M = NOMINAL
BASELINE = Path(__file__).parent / "recorded" / "timing_tiny_int8.json"
#: A module's worst path may grow by this much before the test fails (ABC moves paths by about a LUT level after
#: unrelated edits; a new multiplier or carry chain in a cycle is more than this).
TOLERANCE_NS = 0.30


# ---------------------------------------------------------------------------------------------------- netlists
class _Net:
    """A tiny builder of Yosys JSON netlists (one module ``top``)."""

    def __init__(self) -> None:
        self.cells: dict[str, dict] = {}
        self.ports: dict[str, dict] = {}
        self.netnames: dict[str, dict] = {}
        self._next = 2

    def bit(self, name: str | None = None) -> int:
        b = self._next
        self._next += 1
        if name:
            self.netnames[name] = {"bits": [b], "hide_name": 0, "attributes": {}}
        return b

    def cell(self, name: str, kind: str, ins: dict[str, list], outs: dict[str, list], params=None, src=None) -> None:
        self.cells[name] = {
            "type": kind, "parameters": params or {}, "attributes": {"src": src} if src else {},
            "port_directions": {**{p: "input" for p in ins}, **{p: "output" for p in outs}},
            "connections": {**ins, **outs}}

    def ff(self, name: str, d: int, q: int) -> None:
        self.cell(name, "FDRE", {"C": [1], "CE": ["1"], "R": ["0"], "D": [d]}, {"Q": [q]},
                  src=f"x.py:{len(self.cells)}")

    def lut(self, name: str, ins: list[int], out: int) -> None:
        self.cell(name, f"LUT{len(ins)}", {f"I{i}": [b] for i, b in enumerate(ins)}, {"O": [out]})

    def json(self) -> dict:
        return {"modules": {"top": {"attributes": {"top": "00000000000000000000000000000001"}, "ports": self.ports,
                                    "cells": self.cells, "netnames": self.netnames}}}


def _lut_chain(levels: int) -> tuple[_Net, int]:
    n = _Net()
    q0, d0 = n.bit("a"), n.bit()
    n.ff("ra", d0, q0)
    prev = q0
    for k in range(levels):
        out = n.bit()
        n.lut(f"l{k}", [prev], out)
        prev = out
    n.ff("rb", prev, n.bit("b"))
    return n, levels


def test_register_lut_chain_register() -> None:
    n, _ = _lut_chain(3)
    paths = analyze_netlist(n.json(), model=M)
    by_end = {p.end: p for p in paths}
    p = by_end["b"]
    # clock-to-Q, then three (net + LUT), the last net into the flip-flop, setup. Every net has one sink.
    expected = M.ff_clk_q + 3 * (M.net_base + M.lut) + M.net_base + M.ff_setup
    assert p.delay_ns == pytest.approx(expected, abs=1e-3)
    assert (p.lut_levels, p.carry_cells, p.dsps, p.start) == (3, 0, 0, "a")
    assert expected == pytest.approx(1.85)  # the numbers of the model as documented (docs/timing.md)


def test_fanout_term() -> None:
    n = _Net()
    q, d = n.bit("a"), n.bit()
    n.ff("ra", d, q)
    outs = [n.bit(f"o{k}") for k in range(4)]
    for k, o in enumerate(outs):
        n.lut(f"l{k}", [q], o)
        n.ff(f"r{k}", o, n.bit(f"q{k}"))
    fanouts: list = []
    paths = analyze_netlist(n.json(), model=M, fanouts=fanouts)
    assert fanouts[0] == ("a", 4, "FDRE")
    worst = paths[0]
    # ``a`` drives four LUTs (fanout 4: + 2 x 0.08); each LUT output one flip-flop.
    expected = M.ff_clk_q + M.net_base + 2 * M.net_per_log2_fanout + M.lut + M.net_base + M.ff_setup
    assert worst.delay_ns == pytest.approx(expected, abs=1e-3)


def _dsp_net(params: dict) -> dict:
    n = _Net()
    qa, qb, p = n.bit("a"), n.bit("b"), n.bit()
    n.ff("ra", n.bit(), qa)
    n.ff("rb", n.bit(), qb)
    n.cell("mul", "DSP48E2", {"CLK": [1], "A": [qa], "B": [qb], "C": ["0"]}, {"P": [p]}, params=params,
           src="checker.py:80")
    n.ff("rp", p, n.bit("prod"))
    return n.json()


def test_unregistered_dsp_path() -> None:
    paths = analyze_netlist(_dsp_net({"AREG": 0, "BREG": 0, "MREG": 0, "PREG": 0}), model=M,
                            infer_dsp_registers=False)
    p = {q.end: q for q in paths}["prod"]
    expected = M.ff_clk_q + M.net_base + M.dsp_mult + M.dsp_alu + M.net_base + M.ff_setup
    assert p.delay_ns == pytest.approx(expected, abs=1e-3)
    # Source lines: the start register's declaration, the DSP's expression, the end register's declaration.
    assert p.dsps == 1 and p.src == ["x.py:0", "checker.py:80", "x.py:3"]
    # DS925 -2 without pipeline registers: 410 MHz (2.44 ns); the model is within 0.15 ns of it.
    assert abs(expected - 1000 / 410) < 0.15


def test_fabric_registers_around_a_dsp_are_packed_into_it() -> None:
    """Yosys leaves the registers in the fabric; Vivado packs them (AREG/BREG, PREG): the walk does the same."""
    net = _dsp_net({"AREG": 0, "BREG": 0, "MREG": 0, "PREG": 0})
    p = {q.end: q for q in analyze_netlist(net, model=M)}["prod"]
    assert p.delay_ns == pytest.approx(M.dsp_reg_clk_q + M.dsp_mult + M.dsp_alu + M.dsp_setup, abs=1e-3)
    # DS925 -2 with input and output registers but no MREG: 544 MHz (1.84 ns).
    assert abs(p.delay_ns - 1000 / 544) < 0.25
    # A register with a second load stays in the fabric (and so do the other input registers of that DSP).
    cells = net["modules"]["top"]["cells"]
    qa = cells["ra"]["connections"]["Q"][0]
    cells["extra"] = {"type": "LUT1", "parameters": {}, "attributes": {}, "port_directions": {"I0": "input",
                      "O": "output"}, "connections": {"I0": [qa], "O": [999]}}
    p = {q.end: q for q in analyze_netlist(net, model=M)}["prod"]
    expected = M.ff_clk_q + M.net(2) + M.dsp_mult + M.dsp_alu + M.dsp_setup   # P still goes into a PREG
    assert p.delay_ns == pytest.approx(expected, abs=1e-3)


def test_dsp_with_registers_cuts_the_path() -> None:
    paths = analyze_netlist(_dsp_net({"AREG": 1, "BREG": 1, "MREG": 1, "PREG": 1}), model=M)
    by_end = {p.end: p for p in paths}
    into = by_end["DSP48E2 mul (AREG)"]
    assert into.delay_ns == pytest.approx(M.ff_clk_q + M.net_base + M.dsp_setup, abs=1e-3)
    out = by_end["prod"]
    assert out.delay_ns == pytest.approx(M.dsp_reg_clk_q + M.net_base + M.ff_setup, abs=1e-3)
    assert out.start == "DSP48E2 mul"


def test_carry_chain_and_bram() -> None:
    n = _Net()
    qa = n.bit("a")
    n.ff("ra", n.bit(), qa)
    co = [n.bit() for _ in range(4)]
    o2 = [n.bit() for _ in range(4)]
    n.cell("c0", "CARRY4", {"CI": ["0"], "CYINIT": ["0"], "DI": ["0"] * 4, "S": [qa, "0", "0", "0"]},
           {"CO": co, "O": [n.bit() for _ in range(4)]})
    n.cell("c1", "CARRY4", {"CI": [co[3]], "CYINIT": ["0"], "DI": ["0"] * 4, "S": ["0"] * 4},
           {"CO": [n.bit() for _ in range(4)], "O": o2})
    n.ff("rs", o2[3], n.bit("sum"))
    dout = [n.bit() for _ in range(2)]
    qr = n.bit("addr")
    n.ff("rr", n.bit(), qr)
    n.cell("ram", "RAMB36E2", {"CLKARDCLK": [1], "ADDRARDADDR": [qr]}, {"DOUTADOUT": dout[:1], "DOUTBDOUT": dout[1:]},
           params={"DOA_REG": 0, "DOB_REG": 1})
    n.lut("la", [dout[0]], out_a := n.bit())
    n.ff("rda", out_a, n.bit("rd_a"))
    n.ff("rdb", dout[1], n.bit("rd_b"))
    by_end = {p.end: p for p in analyze_netlist(n.json(), model=M)}
    # S entry of the first cell, CO -> CI on the dedicated route (no net delay), ripple through the second.
    assert by_end["sum"].delay_ns == pytest.approx(
        M.ff_clk_q + M.net_base + M.carry4_entry + M.carry4_ripple + M.net_base + M.ff_setup, abs=1e-3)
    assert (by_end["sum"].carry_cells, by_end["sum"].carry_chains) == (2, 1)
    assert by_end["rd_a"].delay_ns == pytest.approx(M.bram_clk_q + M.net_base + M.lut + M.net_base + M.ff_setup,
                                                    abs=1e-3)
    assert by_end["rd_b"].delay_ns == pytest.approx(M.bram_clk_q_reg + M.net_base + M.ff_setup, abs=1e-3)
    assert by_end["RAMB36E2 ram"].delay_ns == pytest.approx(M.ff_clk_q + M.net_base + M.bram_setup, abs=1e-3)


def test_ports_are_start_and_end_points() -> None:
    n = _Net()
    i, o = n.bit("i"), n.bit("o")
    n.ports = {"i": {"direction": "input", "bits": [i]}, "o": {"direction": "output", "bits": [o]}}
    n.lut("l", [i], o)
    pairs: list = []
    paths = analyze_netlist(n.json(), model=M, port_arrival=lambda _p: 1.0, port_setup=lambda _p: 0.5,
                            io_pairs=pairs)
    assert pairs == [("i", "o")]
    assert paths[0].start == "port i" and paths[0].end == "port o"
    assert paths[0].delay_ns == pytest.approx(1.0 + M.net_base + M.lut + M.net_base + 0.5, abs=1e-3)


def test_model_budget_and_fmax() -> None:
    model = DelayModel()
    assert model.period_budget(250.0) == pytest.approx(4.0 - model.clock_uncertainty)
    assert model.fmax_mhz(4.0 - model.clock_uncertainty) == pytest.approx(250.0)


# ---------------------------------------------------------------------------------------------------- baseline
def _baseline() -> dict:
    return json.loads(BASELINE.read_text())


def test_baseline_matches_the_preset_and_its_clock() -> None:
    """The recorded tiny_int8 results cover every module, and the preset's clock is within what they support."""
    from dlproc.boards.timing import MODEL_VERSION

    data = _baseline()
    config = ProcessorConfig.preset("tiny_int8")
    assert data["model_version"] == MODEL_VERSION, "the delay model changed: regenerate the baseline (docs/timing.md)"
    assert sorted(data["modules"]) == sorted(modules_for(config))
    worst = max(m["worst_ns"] for m in data["modules"].values())
    assert PRESETS["tiny_int8"]["clock_mhz"] <= NOMINAL.fmax_mhz(worst) + 1e-6


def test_every_preset_clock_is_within_its_recorded_check() -> None:
    """Figures follow the evidence: each preset's clock_mhz is at most the fmax its recorded timing check supports."""
    from dlproc.boards.timing import RECORDED, timing_key, timing_status

    recorded = json.loads(RECORDED.read_text())
    for name in PRESETS:
        config = ProcessorConfig.preset(name)
        entry = recorded.get(timing_key(config))
        assert entry is not None, f"{name}: no recorded timing check (python bench/timing_presets.py {name} --record)"
        assert config.clock_mhz <= entry["fmax_mhz"], (name, config.clock_mhz, entry["fmax_mhz"])
        assert "timing check passes" in timing_status(config)
        assert "FAILS" in timing_status(config.replace(clock_mhz=entry["fmax_mhz"] + 5))


def test_reports_name_the_clock_and_the_check() -> None:
    """The resource report and the profile say which clock their figures assume and the check's verdict."""
    from dlproc.boards.resources import model_resources
    from dlproc.runtime.profile import LayerProfile, Profile

    config = ProcessorConfig.preset("zcu102_int8")
    profile = Profile(config, [LayerProfile("conv0", "Conv", "hw", 1000, 5000)], 1000, source="estimate")
    for text in (str(profile), str(model_resources(config))):
        assert f"figures assume a {config.clock_mhz:g} MHz clock; timing check passes" in text


def test_cli_errors_are_one_line(capsys) -> None:
    from dlproc.runtime.cli import main

    assert main(["timing", "--processor", "no_such_preset"]) == 2
    assert main(["timing", "--processor", "tiny_int8", "--module", "fpadd"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "unknown processor" in err[0] and "unknown module 'fpadd'" in err[1]


@pytest.mark.slow
@pytest.mark.parametrize("module", modules_for(ProcessorConfig.preset("tiny_int8")))
def test_tiny_int8_module_does_not_get_slower(module: str) -> None:
    """Synthesize the module (cached by RTLIL digest) and compare its worst path with the baseline.

    When the module's RTLIL digest equals the recorded one and no netlist is cached, the recorded result *is* the
    result (synthesis and the walk are deterministic for one Yosys version), so synthesis is skipped; any change of
    the module's RTL changes the digest and re-synthesizes.
    """
    from dlproc.boards.timing import module_timing, timing_cache_dir

    config = ProcessorConfig.preset("tiny_int8")
    recorded = _baseline()["modules"][module]
    digest = module_digest(module_rtlil(config, module), module)
    cached = any(timing_cache_dir().glob(f"{module}-{digest}.json.gz"))
    if digest == recorded["digest"] and not cached:
        pytest.skip(f"{module}: RTL unchanged since the baseline ({digest}); nothing to synthesize")
    result = module_timing(config, module)
    assert result.worst_ns <= recorded["worst_ns"] + TOLERANCE_NS, (
        f"{module}: worst path {result.worst_ns:.2f} ns ({result.paths[0].start} -> {result.paths[0].end}, "
        f"{' > '.join(result.paths[0].src)}) is worse than the baseline {recorded['worst_ns']:.2f} ns "
        f"+ {TOLERANCE_NS} ns")
    assert math.isfinite(result.fmax_mhz())
