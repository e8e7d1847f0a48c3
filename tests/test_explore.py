"""Design-space exploration (``dlproc.explore``, ``dlproc explore``) and its task engine on Ray.

The sweep's answers are checked against independent computations: every proposed point is re-validated and its
resources compared with the board budget; the front is checked by brute-force dominance; the recommended point's
frame rate is recomputed through ``Workflow.compile`` + ``estimate_performance`` (no grouping, no fc/clock reuse);
the compile grouping is checked by compiling configurations that differ only in the fields it ignores.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import onnx
import pytest
from nets import ALL_NETS

from dlproc.boards.resources import BOARDS, board_capacity, model_resources
from dlproc.compiler.network import compile_graph
from dlproc.processor.config import ProcessorConfig
from dlproc.runtime.distributed import run_tasks
from dlproc.runtime.estimate import estimate_performance
from dlproc.runtime.explore import NOT_COMPILED_FIELDS, compile_key, explore, supported_clocks
from dlproc.runtime.workflow import Workflow

#: A small space around the tiny preset: 4..8 input lanes, two buffer sizes; a few seconds in-process.
SMALL_SPACE = {"conv_ic_lanes": (4, 8), "conv_oc_lanes": (4, 8, 16), "fc_threads": (2, 4),
               "input_buffer_kib": (4, 16), "weight_buffer_kib": (4, 16), "acc_buffer_entries": (256,),
               "param_buffer_entries": (32,)}


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("explore")
    paths = []
    for name in ("classifier", "conv_padding"):
        model, _ = ALL_NETS[name]()
        onnx.save(model, d / f"{name}.onnx")
        paths.append(str(d / f"{name}.onnx"))
    return paths


@pytest.fixture(scope="module")
def sweep(nets):
    return explore(nets, fps=2000, base="tiny_int8", space=SMALL_SPACE, workers=0)


def _fps_by_workflow(path: str, config: ProcessorConfig) -> float:
    """Frames/s of a network on a configuration the plain way: calibrate, compile, estimate."""
    wf = Workflow(path, processor=config)
    wf.calibrate(np.random.default_rng(0).random((4, *wf.input_shape), dtype=np.float32), progress=False)
    return estimate_performance(wf.compile()).fps


def test_every_proposed_point_is_legal_and_fits(sweep):
    assert sweep.points
    board = BOARDS["zcu102"]
    for p in sweep.points:
        ProcessorConfig.from_dict(p.config.to_dict())  # validation passes again
        res = model_resources(p.config).total
        assert res.DSP <= board.DSP and res.LUT <= board.LUT and res.BRAM36 <= board.BRAM36 and res.FF <= board.FF
    assert sweep.rejected["invalid"] > 0  # e.g. conv_oc_lanes < conv_ic_lanes was never proposed
    assert "DDR model" in " ".join(sweep.assumptions) and "clock" in sweep.assumptions[0]


def test_front_is_exactly_the_non_dominated_points(sweep):
    def dominates(q, p):
        no_worse = q.min_fps >= p.min_fps and all(q.resources[k] <= p.resources[k] for k in ("DSP", "LUT", "BRAM36"))
        better = q.min_fps > p.min_fps or any(q.resources[k] < p.resources[k] for k in ("DSP", "LUT", "BRAM36"))
        return no_worse and better

    expected = {id(p) for p in sweep.points if not any(dominates(q, p) for q in sweep.points)}
    assert {id(p) for p in sweep.front} == expected


def test_recommended_is_the_smallest_meeting_the_target_and_its_rate_is_real(sweep, nets):
    rec = sweep.recommended
    assert rec is not None
    need = sweep.target_fps * (1 + sweep.margin)
    meeting = [p for p in sweep.points if min(p.fps.values()) >= need]
    assert rec.resources["DSP"] == min(p.resources["DSP"] for p in meeting)
    slower = [p for p in sweep.points if p.resources["DSP"] < rec.resources["DSP"]]
    assert slower and all(min(p.fps.values()) < need for p in slower)
    for path, name in zip(nets, sweep.networks, strict=True):
        fps = _fps_by_workflow(path, rec.config)
        assert fps == pytest.approx(rec.fps[name], rel=1e-9)
        assert fps >= need


def test_compilation_is_shared_by_configurations_of_one_compile_key(sweep, nets):
    keys = {compile_key(p.config) for p in sweep.points}
    assert sweep.compilations <= len(keys) * len(nets) + sweep.rejected["does not compile"] * len(nets)
    assert len(sweep.points) > sweep.compilations / len(nets)
    # the fields the key ignores really do not change the program
    wf = Workflow(nets[0], processor="small_int8")
    wf.calibrate(np.random.default_rng(0).random((4, *wf.input_shape), dtype=np.float32), progress=False)
    base = ProcessorConfig.preset("small_int8")
    other = base.replace(clock_mhz=137.0, fc_threads=2, event_log_depth=64)
    assert set(NOT_COMPILED_FIELDS) == {k for k in base.to_dict() if getattr(base, k) != getattr(other, k)}
    assert compile_key(base) == compile_key(other)
    a, b = compile_graph(wf.graph, base), compile_graph(wf.graph, other)
    assert a.instructions() == b.instructions() and a.image == b.image


def test_custom_budget_and_smaller_board(nets):
    res = explore(nets[:1], fps=500, base="tiny_int8", space=SMALL_SPACE, workers=0, board="custom:dsp=80,lut=20000")
    assert res.board.DSP == 80 and res.rejected["over budget"] > 0
    assert all(p.resources["DSP"] <= 80 and p.resources["LUT"] <= 20000 for p in res.points)
    kv = board_capacity("kv260")
    assert (kv.DSP, kv.BRAM36, kv.URAM, kv.LUT, kv.FF) == (1248, 144, 64, 117_120, 234_240)
    for bad in ("custom:", "custom:dsp=x", "custom:gates=5", "zcu999"):
        with pytest.raises(ValueError, match="board"):
            board_capacity(bad)


@pytest.mark.parametrize("objective, value", [("lut", lambda p: p.resources["LUT"]),
                                              ("bram", lambda p: p.resources["BRAM36"]),
                                              ("power", lambda p: p.config.clock_mhz * (
                                                  p.resources["DSP"] + 2 * p.resources["BRAM36"]
                                                  + p.resources["LUT"] / 64 + p.resources["FF"] / 256))])
def test_each_objective_picks_its_own_minimum(nets, objective, value):
    res = explore(nets[:1], fps=1000, base="tiny_int8", space=SMALL_SPACE, workers=0, objective=objective)
    meeting = [p for p in res.points if min(p.fps.values()) >= 1100]
    assert res.recommended is not None and value(res.recommended) == min(value(p) for p in meeting)


def test_unreachable_target_recommends_nothing(nets):
    res = explore(nets[:1], fps=1e9, base="tiny_int8", space=SMALL_SPACE, workers=0)
    assert res.points and res.recommended is None
    assert "No configuration reaches" in res.summary()


def test_clock_falls_back_to_the_configuration_clock_labelled_not_checked():
    clocks, label = supported_clocks(ProcessorConfig.preset("tiny_int8"))
    try:
        import dlproc.boards.timing  # noqa: F401
    except ImportError:
        assert (clocks, label) == ([100.0], "clock not checked")
    else:  # the timing check is merged: either its recorded clocks, or the same fallback
        assert clocks and all(10 <= c <= 1000 for c in clocks)


def test_writes_table_csv_json_png_and_a_processor_json_compile_accepts(sweep, tmp_path):
    paths = sweep.write(tmp_path)
    assert {"csv", "json", "png", "processor"} <= set(paths)
    rows = paths["csv"].read_text().splitlines()
    assert len(rows) == len(sweep.points) + 1
    data = json.loads(paths["json"].read_text())
    assert data["recommended_config"] == sweep.recommended.config.to_dict()
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ProcessorConfig.load(str(paths["processor"])) == sweep.recommended.config
    assert "*" in sweep.table()


# ---------------------------------------------------------------------------------------------------- on Ray
@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with two workers for the module (starting Ray takes ~15 s here)."""
    import sys

    ray = pytest.importorskip("ray")  # the 'explore' extra; the tests above run without it

    # the test tasks below live in this test module, which the workers cannot import: pickle them by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def _flaky(item, shared):
    if item == "raise":
        raise RuntimeError("simulator said no")
    if item == "crash":
        os._exit(3)  # the worker process dies, as a crashed simulator would take it down
    if item == "slow":
        time.sleep(60)
    return item * shared


def test_failed_tasks_are_reported_and_the_others_kept(local_ray):
    seen = []
    out = run_tasks(_flaky, [1, "raise", 2, "crash", 3], shared=10, on_result=seen.append)
    assert [r.value for r in out if r.ok] == [10, 20, 30]
    assert "RuntimeError: simulator said no" in out[1].error
    assert out[3].error and not out[3].ok
    assert len(seen) == 5


def test_timed_out_task_is_reported(local_ray):
    out = run_tasks(_flaky, [1, "slow"], shared=1, timeout_s=5)
    assert out[0].value == 1 and "timed out" in out[1].error


def test_sweep_on_ray_matches_the_in_process_sweep(local_ray, nets, sweep):
    on_ray = explore(nets, fps=2000, base="tiny_int8", space=SMALL_SPACE)
    assert not on_ray.failures

    def key(r):
        return sorted((p.config.hardware_hash, tuple(sorted(p.cycles.items()))) for p in r.points)

    assert key(on_ray) == key(sweep)
    assert on_ray.recommended.config == sweep.recommended.config


# ---------------------------------------------------------------------------------------------------- the CLI
def test_cli_explore_writes_files_and_compile_takes_the_chosen_json(nets, tmp_path, capsys):
    from dlproc.runtime.cli import main

    out = tmp_path / "ex"
    code = main(["explore", *nets, "--fps", "2000", "--base", "tiny_int8", "--workers", "0",
                 "--space", json.dumps({k: list(v) for k, v in SMALL_SPACE.items()}), "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "Recommended:" in text and "clock" in text and "DDR model" in text
    chosen = ProcessorConfig.load(str(out / "processor.json"))
    assert {"points.csv", "explore.json", "pareto.png", "processor.json"} <= {p.name for p in out.iterdir()}
    assert f"[{chosen.hardware_hash}]" in text
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32))
    assert main(["compile", nets[0], "--processor", str(out / "processor.json"), "--calibration",
                 str(tmp_path / "calib.npy"), "-o", str(tmp_path / "bundle")]) == 0


@pytest.mark.parametrize("argv, message", [
    (["--board", "custom:dsp=lots"], "bad custom board"),
    (["--board", "zcu999"], "unknown board"),
    (["--space", "{\"conv_lanes\": [4]}"], "unknown field"),
    (["--space", "[4]"], "--space"),
])
def test_cli_explore_bad_input_one_line(nets, capsys, argv, message):
    from dlproc.runtime.cli import main

    assert main(["explore", nets[0], "--fps", "100", "--workers", "0", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------------------------------------------- RTL and synthesis
TINY_ONLY = {"conv_ic_lanes": (4,), "conv_oc_lanes": (8,), "fc_threads": (4,), "input_buffer_kib": (4,),
             "weight_buffer_kib": (4,), "acc_buffer_entries": (256,), "param_buffer_entries": (32,)}


@pytest.mark.slow
def test_verify_and_synthesize_the_best_on_ray(local_ray, nets):
    """The tiny preset's Verilator build and Yosys synthesis as Ray tasks (cached by content in ~/.cache/dlproc:
    ~20 s warm; the first synthesis of a changed RTL takes ~4 min on this machine)."""
    res = explore(nets[:1], fps=100, base="tiny_int8", space=TINY_ONLY, verify=1, synthesize=1)
    (p,) = res.verified
    # the tiny preset at a clock the timing check supports for it (the preset's own, or a faster candidate)
    assert p.config.clock_mhz in supported_clocks(ProcessorConfig.preset("tiny_int8"))[0]
    assert p.config == ProcessorConfig.preset("tiny_int8").replace(clock_mhz=p.config.clock_mhz)
    assert p.verify_error is None and p.synthesis_error is None
    name = res.networks[0]
    # the RTL's own cycle counters against the estimate (tests/test_property.py holds them within 5 %)
    assert p.measured_fps[name] == pytest.approx(p.fps[name], rel=0.05)
    assert p.synthesized["DSP"] == pytest.approx(p.resources["DSP"], rel=0.02)
    assert "RTL (Verilator)" in res.summary() and "Yosys" in res.summary()


# ---------------------------------------------------------------------------------------------------- validate
def test_validate_on_workers_equals_the_serial_run(local_ray, nets):
    """Workflow.validate(workers=2) on the RTL: the frames are split over two Ray tasks, each with its own
    Verilator simulation of the tiny preset; the result equals the golden model's, frame for frame."""
    x = np.random.default_rng(1).random((5, 3, 32, 32), dtype=np.float32)
    labels = np.arange(5) % 10
    sim = Workflow(nets[0], processor="tiny_int8", target="sim")
    sim.calibrate(x[:2], progress=False)
    ref = Workflow(nets[0], processor="tiny_int8", target="ref")
    ref.graph = sim.graph  # the same quantized network
    on_workers = sim.validate(x, labels, workers=2)
    serial = ref.validate(x, labels)
    assert on_workers.frames == 5 and on_workers.target == "sim"
    assert on_workers.int8_accuracy == serial.int8_accuracy and on_workers.agreement == serial.agreement
    for name, err in serial.outputs.items():
        assert on_workers.outputs[name].max_abs == err.max_abs


def test_recorded_timing_results_set_the_clocks(nets, monkeypatch, tmp_path):
    """When dlproc.boards.timing has a recorded fmax for a configuration, the sweep tries the candidate clocks up to
    it (a stand-in module with the interface of the timing check's branch: RECORDED, timing_key, MODEL_VERSION)."""
    import sys
    import types

    recorded = tmp_path / "timing_recorded.json"
    fake = types.ModuleType("dlproc.boards.timing")
    fake.RECORDED, fake.MODEL_VERSION = recorded, 7
    fake.timing_key = lambda config: f"{config.conv_ic_lanes}x{config.conv_oc_lanes}"
    recorded.write_text(json.dumps({"4x8": {"fmax_mhz": 212.0, "model_version": 7, "date": "2026-12-02"},
                                    "4x4": {"fmax_mhz": 150.0, "model_version": 6}}))
    monkeypatch.setitem(sys.modules, "dlproc.boards.timing", fake)
    tiny = ProcessorConfig.preset("tiny_int8")
    assert supported_clocks(tiny) == ([100.0, 150.0, 200.0], "timing check: fmax 212 MHz (recorded 2026-12-02)")
    assert supported_clocks(tiny.replace(conv_oc_lanes=4)) == ([tiny.clock_mhz], "clock not checked")  # older model
    res = explore(nets[:1], fps=100, base="tiny_int8", space=TINY_ONLY, workers=0, objective="power")
    assert sorted(p.config.clock_mhz for p in res.points) == [100.0, 150.0, 200.0]
    (cycles,) = {p.cycles[res.networks[0]] for p in res.points}  # one compilation, the clock only rescales
    for p in res.points:
        assert p.fps[res.networks[0]] == pytest.approx(p.config.clock_mhz * 1e6 / cycles)
    assert res.recommended.config.clock_mhz == 100.0  # the power index prefers the slowest clock that suffices
