"""The cache of generated artifacts (dlproc.cache) and the phase reporter (dlproc.progress)."""

from __future__ import annotations

import ast
import io
import multiprocessing
import shutil
from pathlib import Path

import pytest
from rtl_fixtures.standin_top import StandInTop

import dlproc.sim.verilator.build as build_module
from dlproc.cache import (
    MARKER,
    RTL_NEUTRAL_IMPORTS,
    cached_entry,
    entry_is_complete,
    make_key,
    processor_sources,
    source_digest,
)
from dlproc.processor.config import ProcessorConfig
from dlproc.progress import phase


def test_processor_imports_nothing_else_of_dlproc() -> None:
    # The cache keys digest only dlproc.processor's sources as "the generator": that is complete only if the
    # processor's modules import no other part of dlproc.
    offenders = []
    for path in sorted(processor_sources().glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            offenders += [f"{path.name}: {n}" for n in names
                          if n.startswith("dlproc") and not n.startswith("dlproc.processor")
                          and n not in RTL_NEUTRAL_IMPORTS]
    assert offenders == []


def test_keys_and_source_digests(tmp_path: Path) -> None:
    assert make_key({"a": 1, "b": [2, 3]}) == make_key({"b": [2, 3], "a": 1})
    assert make_key({"a": 1}) != make_key({"a": 2})
    (tmp_path / "m.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("not python")
    before = source_digest([tmp_path])
    (tmp_path / "notes.txt").write_text("changed")  # directories contribute their *.py files only
    assert source_digest([tmp_path]) == before
    (tmp_path / "m.py").write_text("x = 2\n")
    assert source_digest([tmp_path]) != before


def _write(work: Path, text: str = "payload") -> None:
    (work / "out.bin").write_text(text)


def test_entry_is_built_once_and_rebuilt_when_corrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLPROC_CACHE", str(tmp_path))
    calls: list[Path] = []

    def build(work: Path) -> None:
        calls.append(work)
        _write(work)

    entry = cached_entry("things", "k1", build, ["out.bin"])
    assert entry == tmp_path / "things" / "k1" and (entry / "out.bin").read_text() == "payload"
    assert entry_is_complete(entry, "k1") and not entry_is_complete(entry, "other")
    assert cached_entry("things", "k1", build, ["out.bin"]) == entry and len(calls) == 1

    (entry / "out.bin").write_text("trunc")  # corrupted after completion: digest mismatch
    assert not entry_is_complete(entry)
    cached_entry("things", "k1", build, ["out.bin"])
    assert len(calls) == 2 and (entry / "out.bin").read_text() == "payload"

    (entry / MARKER).unlink()  # half-written (no marker): rebuilt
    cached_entry("things", "k1", build, ["out.bin"])
    assert len(calls) == 3 and entry_is_complete(entry)
    assert [p.name for p in (tmp_path / "things").iterdir() if p.name.startswith(".")] == []


def test_failed_or_incomplete_build_leaves_no_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLPROC_CACHE", str(tmp_path))

    def failing(work: Path) -> None:
        _write(work)
        raise RuntimeError("tool crashed")

    with pytest.raises(RuntimeError, match="tool crashed"):
        cached_entry("things", "k2", failing, ["out.bin"])
    with pytest.raises(RuntimeError, match=r"produced no \['out.bin'\]"):
        cached_entry("things", "k2", lambda work: None, ["out.bin"])
    assert [p.name for p in (tmp_path / "things").iterdir()] == ["k2.lock"]


def _build_in_process(cache: str, counter: str) -> str:
    import os
    import time

    os.environ["DLPROC_CACHE"] = cache

    def build(work: Path) -> None:
        with open(counter, "a") as f:
            f.write("built\n")
        time.sleep(0.5)  # the other process queues on the lock meanwhile
        _write(work, "from one builder")

    return str(cached_entry("things", "k3", build, ["out.bin"]))


def test_two_processes_build_one_entry_once(tmp_path: Path) -> None:
    counter = tmp_path / "counter.txt"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        entries = pool.starmap(_build_in_process, [(str(tmp_path / "cache"), str(counter))] * 2)
    assert entries[0] == entries[1]
    assert counter.read_text() == "built\n"
    assert (Path(entries[0]) / "out.bin").read_text() == "from one builder"


def test_open_does_not_elaborate(standin_config: ProcessorConfig, standin_library: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def no_verilog(*args, **kwargs):
        raise AssertionError("a cached simulator must open without generating Verilog")

    monkeypatch.setattr(build_module, "generate_verilog", no_verilog)
    assert build_module.build_simulator(standin_config, top=StandInTop) == standin_library


def test_simulator_key_follows_the_generator_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ProcessorConfig.preset("tiny_int8")
    key = build_module._cache_key(cfg, trace=False)
    assert build_module._cache_key(cfg, trace=True) != key
    assert build_module._cache_key(cfg.replace(conv_oc_lanes=4), trace=False) != key
    copy = tmp_path / "processor"
    shutil.copytree(processor_sources(), copy)
    monkeypatch.setattr(build_module, "processor_sources", lambda: copy)
    assert build_module._cache_key(cfg, trace=False) == key
    with open(copy / "engine.py", "a") as f:
        f.write("\n# an edit of the generator\n")
    assert build_module._cache_key(cfg, trace=False) != key


def test_phase_lines_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLPROC_PROGRESS", "1")
    out = io.StringIO()
    with phase("synthesizing", stream=out):
        pass
    lines = out.getvalue().splitlines()
    assert lines[0] == "dlproc: synthesizing ..."
    assert lines[1].startswith("dlproc: synthesizing: done in ") and lines[1].endswith(" s")
    out = io.StringIO()
    with pytest.raises(ValueError), phase("routing", stream=out):
        raise ValueError("boom")
    assert "routing: failed after" in out.getvalue()
    out = io.StringIO()
    with phase("quiet step", stream=out, quiet=True):
        pass
    monkeypatch.setenv("DLPROC_PROGRESS", "0")
    with phase("silenced step", stream=out):
        pass
    assert out.getvalue() == ""


def test_recorded_figures_fresh_stale_and_refresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import recorded

    monkeypatch.setattr(recorded, "RECORDS_DIR", tmp_path)
    monkeypatch.delenv("DLPROC_REFRESH_RECORDS", raising=False)
    runs: list[int] = []

    def flow() -> dict:
        runs.append(1)
        return {"LUT": 100 + len(runs)}

    figures, stale = recorded.recorded_figures("syn", "a", "key1", flow)  # no record: runs, asks for a refresh
    assert figures == {"LUT": 101} and stale and "DLPROC_REFRESH_RECORDS=1" in stale and "no record" in stale
    assert not (tmp_path / "syn.json").exists()
    monkeypatch.setenv("DLPROC_REFRESH_RECORDS", "1")
    figures, stale = recorded.recorded_figures("syn", "a", "key1", flow)  # refresh: runs and records
    assert figures == {"LUT": 102} and stale is None
    monkeypatch.setenv("DLPROC_REFRESH_RECORDS", "0")
    figures, stale = recorded.recorded_figures("syn", "a", "key1", flow)  # same inputs: the record, no run
    assert figures == {"LUT": 102} and stale is None and len(runs) == 2
    figures, stale = recorded.recorded_figures("syn", "a", "key2", flow)  # inputs changed: runs, stale
    assert figures == {"LUT": 103} and stale and "recorded for inputs key1" in stale
