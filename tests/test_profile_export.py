"""Machine-readable profiles: JSON, CSV and the Chrome/Perfetto trace, checked against independent recomputations.

The per-layer cycles are recomputed here from the raw event logs (the estimate's replay of the program, and the
RTL's own event log on the tiny configuration), without the profile code's helpers.
"""

import csv
import json

import numpy as np
import pytest
from nets import ALL_NETS, NetBuilder

from dlproc.processor.isa import END_MARK
from dlproc.runtime.cli import main
from dlproc.runtime.driver import Driver
from dlproc.runtime.estimate import estimate_performance, program_cycles
from dlproc.runtime.profile import PROFILE_SCHEMA, profile_from_runs
from dlproc.runtime.workflow import Workflow


def _compiled(netname: str, cfg: str):
    model, _ = ALL_NETS[netname]()
    rng = np.random.default_rng(5)
    wf = Workflow(model, processor=cfg, target="ref")
    wf.calibrate(rng.standard_normal((4, *wf.input_shape)).astype(np.float32))
    return wf, wf.compile(), rng


def _cycles_from_logs(logs: list[list[tuple[int, int]]]) -> dict[int, int]:
    """Per layer: sum over its MARK-to-next-MARK intervals (END_MARK only closes the last layer)."""
    out: dict[int, int] = {}
    for log in logs:
        for i in range(len(log) - 1):
            if log[i][0] != END_MARK:
                out[log[i][0]] = out.get(log[i][0], 0) + log[i + 1][1] - log[i][1]
    return out


def test_estimate_json_and_csv_hold_every_figure(tmp_path):
    _, net, _ = _compiled("host_ops", "small_int8")
    prof = estimate_performance(net)
    logs, total = [], 0
    for seg in net.segments:
        if seg.kind == "hw":
            cyc, events = program_cycles(net.config, net.instructions()[seg.start:seg.start + seg.count])
            logs.append(events)
            total += cyc
    want = _cycles_from_logs(logs)
    clock = net.config.clock_mhz

    d = json.loads(prof.to_json(tmp_path / "p.json").read_text())
    assert d["schema"] == PROFILE_SCHEMA and d["source"] == "estimate" and d["target"] == "estimate"
    assert d["network"] == net.name and d["clock_mhz"] == clock and d["processor"] == net.config.hardware_hash
    assert d["config"] == net.config.to_dict()
    assert d["total"]["cycles"] == total
    assert d["total"]["latency_ms"] == pytest.approx(total / (clock * 1e3))
    assert d["total"]["host_ms"] is None  # the estimate does not time host layers
    assert d["total"]["fps"] == pytest.approx(clock * 1e6 / total)
    assert [row["name"] for row in d["layers"]] == [layer.name for layer in net.layers]
    for row, layer in zip(d["layers"], net.layers, strict=True):
        if layer.target == "hw":
            assert row["runs_on"] == "fpga" and row["cycles"] == want[layer.index]
            assert row["latency_ms"] == pytest.approx(want[layer.index] / (clock * 1e3))
            assert row["macs"] == layer.macs
            if layer.macs:
                assert row["mac_utilization"] == pytest.approx(
                    layer.macs / (want[layer.index] * net.config.macs_per_cycle))
            seconds = want[layer.index] / (clock * 1e6)
            assert row["ddr_gbps"] == pytest.approx(row["ddr_bytes"] / seconds / 1e9)
            assert row["intensity"] == pytest.approx(layer.macs / row["ddr_bytes"])
            ridge = net.config.macs_per_cycle / net.config.beat_bytes
            assert row["roof"] == ("compute" if layer.macs / row["ddr_bytes"] >= ridge else "DDR")
        else:
            assert row["runs_on"] == "host" and row["cycles"] is None and row["host_ms"] is None

    with open(prof.to_csv(tmp_path / "p.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(net.layers) + 1 and rows[-1]["layer"] == "Total"
    assert int(rows[-1]["cycles"]) == total and float(rows[-1]["fps"]) == pytest.approx(clock * 1e6 / total)
    for row, layer in zip(rows[:-1], net.layers, strict=True):
        assert row["layer"] == layer.name and row["source"] == "estimate" and float(row["clock_mhz"]) == clock
        assert row["cycles"] == (str(want[layer.index]) if layer.target == "hw" else "")


def test_trace_spans_match_the_rtl_event_log(tmp_path):
    """On the RTL (tiny_int8): every span of the trace is one MARK-to-MARK interval of the hardware's event log, and
    host layers get their own track with their measured time."""
    from dlproc.sim.verilator.device import VerilatorDevice

    wf, net, rng = _compiled("host_ops", "tiny_int8")
    dev = VerilatorDevice(net.config)
    try:
        drv = Driver(dev, timeout_s=300)
        drv.load(net)
        _, runs, _ = drv.infer(rng.standard_normal(wf.input_shape).astype(np.float32))
        host = dict(drv.host_seconds)
    finally:
        dev.close()
    assert set(host) == {layer.index for layer in net.layers if layer.target == "host"}
    prof = profile_from_runs(net, [runs], host_seconds=[host], target="sim")
    # the bytes each layer moves (from its program) add up to the RTL's DMA beat counters, less instruction fetch
    hw_segments = [seg for seg in net.segments if seg.kind == "hw"]
    for seg, run in zip(hw_segments, runs, strict=True):
        layers = {lp.name for lp in net.layers if seg.start <= lp.instr_start < seg.start + seg.count}
        moved = sum(lp.ddr_bytes for lp in prof.layers if lp.name in layers)
        assert moved + seg.count * 32 == (run.rd_beats + run.wr_beats) * net.config.beat_bytes
    trace = json.loads(prof.save_trace(tmp_path / "t.json").read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    clock = net.config.clock_mhz
    hw = [e for e in spans if e["tid"] == 1]
    # independent: the intervals of the raw event logs, in order, segments and host layers laid end to end (us)
    want, t0, hw_runs = [], 0.0, iter(runs)
    for seg in net.segments:
        if seg.kind == "host":
            t0 += host[seg.layer] * 1e6
            continue
        run = next(hw_runs)
        for (lid, cyc), (_, ncyc) in zip(run.events, run.events[1:], strict=False):
            if lid != END_MARK:
                want.append((net.layers[lid].name, t0 + cyc / clock, ncyc - cyc))
        t0 += run.cycles / clock
    assert len(hw) == len(want)
    for e, (name, start, dur) in zip(hw, want, strict=True):
        assert e["name"] == name
        assert e["ts"] == pytest.approx(start) and e["dur"] == pytest.approx(dur / clock)
    per_layer = {}
    for e in hw:
        per_layer[e["name"]] = per_layer.get(e["name"], 0) + round(e["dur"] * clock)
    for layer in prof.layers:
        if layer.target == "hw":
            assert per_layer[layer.name] == layer.cycles
    host_spans = {e["name"]: e["dur"] for e in spans if e["tid"] == 2}
    assert host_spans == {net.layers[i].name: pytest.approx(s * 1e6) for i, s in host.items()}
    # host time is in the profile: its own rows, and frames/s counts it
    assert prof.host_s == pytest.approx(sum(host.values()))
    assert prof.fps == pytest.approx(1 / (sum(r.cycles for r in runs) / (clock * 1e6) + sum(host.values())))
    assert "Host layers (measured)" in str(prof)


def test_all_host_network_has_no_infinite_frame_rate(tmp_path):
    b = NetBuilder("all_host", (1, 4, 5, 5))
    model = b.model([b.node("Sigmoid", ["input"])], opset=17)
    wf = Workflow(model, processor="tiny_int8", target="ref")
    wf.calibrate(np.random.default_rng(0).standard_normal((2, *wf.input_shape)).astype(np.float32))
    prof = wf.estimate_performance()
    text = str(prof)
    assert "inf" not in text and "Frames/s: n/a" in text
    assert json.loads(prof.to_json(tmp_path / "p.json").read_text())["total"]["fps"] is None


def test_cli_estimate_writes_json_csv_and_trace(tmp_path, capsys):
    model, _ = ALL_NETS["classifier"]()
    import onnx

    onnx.save(model, tmp_path / "net.onnx")
    argv = ["estimate", str(tmp_path / "net.onnx"), "--processor", "small_int8", "--json", str(tmp_path / "p.json"),
            "--csv", str(tmp_path / "p.csv"), "--perfetto", str(tmp_path / "t.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    d = json.loads((tmp_path / "p.json").read_text())
    # the printed total is the JSON total
    assert f"{d['total']['cycles']:,}" in out
    assert (tmp_path / "p.csv").read_text().splitlines()[0].startswith("index,layer,op,runs_on,cycles")
    spans = [e for e in json.loads((tmp_path / "t.json").read_text())["traceEvents"] if e["ph"] == "X"]
    layer_spans = [e for e in spans if e["tid"] == 1]
    assert sum(e["dur"] for e in layer_spans) == pytest.approx(d["total"]["latency_ms"] * 1e3, rel=0.01)


def test_estimate_engine_busy_cycles_and_tracks(tmp_path):
    """The estimate's per-engine busy cycles respect physical bounds, and its engine tracks stay inside each layer's
    MARK interval without overlapping themselves."""
    _, net, _ = _compiled("classifier", "small_int8")
    prof = estimate_performance(net)
    c = net.config
    for layer in prof.layers:
        if layer.target != "hw":
            continue
        assert 0 <= layer.compute_busy <= layer.cycles and 0 <= layer.dma_busy <= layer.cycles
        assert layer.dma_busy >= layer.ddr_bytes / c.beat_bytes  # at most one beat per cycle
        if layer.op == "conv":
            assert layer.compute_busy >= layer.macs / c.macs_per_cycle  # at most every MAC lane per cycle
    events = json.loads(prof.save_trace(tmp_path / "t.json").read_text())["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and "tid" in e}
    assert names[3].startswith("dma engine") and names[4].startswith("compute engine")
    layer_span = {e["name"]: (e["ts"], e["ts"] + e["dur"]) for e in events if e["ph"] == "X" and e["tid"] == 1}
    for tid, key in ((3, "dma_busy"), (4, "compute_busy")):
        spans = sorted((e["ts"], e["ts"] + e["dur"], e["name"]) for e in events if e["ph"] == "X" and e["tid"] == tid)
        for (_, end, _), (start, _, _) in zip(spans, spans[1:], strict=False):
            assert start >= end - 1e-9  # one engine does one thing at a time
        for start, end, name in spans:
            lo, hi = layer_span[name]
            assert lo - 1e-9 <= start and end <= hi + 1e-9, name
        for layer in prof.layers:
            if layer.target == "hw":
                got = sum(e - s for s, e, n in spans if n == layer.name) * c.clock_mhz
                assert got == pytest.approx(getattr(layer, key), abs=1e-6 * layer.cycles + 1e-6)


def test_roofline_plot(tmp_path):
    pytest.importorskip("matplotlib")
    _, net, _ = _compiled("classifier", "small_int8")
    prof = estimate_performance(net)
    path = prof.plot_roofline(tmp_path / "roof.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    points = prof.roofline_points()
    clock = net.config.clock_mhz * 1e6
    want = [(lp.name, lp.macs / lp.ddr_bytes, lp.macs / (lp.cycles / clock) / 1e9) for lp in prof.layers
            if lp.target == "hw" and lp.macs]
    assert [p[0] for p in points] == [w[0] for w in want] and len(points) >= 3
    for p, w in zip(points, want, strict=True):
        assert p[1] == pytest.approx(w[1]) and p[2] == pytest.approx(w[2])
        # nothing is above the roofs
        assert p[2] <= min(net.config.macs_per_cycle * clock, p[1] * net.config.beat_bytes * clock) / 1e9 * 1.0001
