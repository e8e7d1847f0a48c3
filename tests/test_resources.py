"""Resource estimates: Yosys synthesis of small configurations, and the analytical model against it.

The synthesis test checks figures recorded in ``tests/recorded/resources.json`` when the inputs of the syntheses
(configuration, processor sources, script, tool versions: :func:`synthesis_key`) are unchanged since the record;
otherwise it runs Yosys (about 1.5 and 2 minutes per configuration on two cores) and asks for the record to be
refreshed (see ``tests/recorded.py``). The cache test synthesizes the small stand-in design of the harness tests.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from recorded import recorded_figures, report_stale

from dlproc.boards.resources import (
    BOARDS,
    MODEL_TOLERANCE,
    ResourceCounts,
    ResourceReport,
    _bram_blocks,
    _count_cells,
    _modules_from_stat,
    estimate_resources,
    model_resources,
    synthesis_key,
)
from dlproc.processor.config import ProcessorConfig

TINY = ProcessorConfig.preset("tiny_int8")         # 4 x 8 conv lanes
NARROW = TINY.replace(conv_oc_lanes=4)             # 4 x 4 conv lanes, otherwise the same


def test_cell_counting_rules() -> None:
    counts = _count_cells({"LUT6": 10, "LUT3": 5, "RAM32M16": 2, "SRLC32E": 1, "FDRE": 7, "FDSE": 1, "CARRY8": 4,
                           "DSP48E2": 3, "RAMB36E2": 2, "RAMB18E2": 3, "URAM288": 1, "MUXF7": 9})
    assert counts == ResourceCounts(LUT=10 + 5 + 16 + 1, FF=8, DSP=3, BRAM36=3.5, URAM=1)


def test_hierarchy_totals_from_stat() -> None:
    stat = {"modules": {
        "\\dlproc_top": {"num_cells_by_type": {"LUT4": 2, "RAMB36E2": 1, "dlproc_top.engine": 1, "dlproc_top.csr": 1}},
        "\\dlproc_top.engine": {"num_cells_by_type": {"DSP48E2": 4, "FDRE": 10, "dlproc_top.engine.dot": 2}},
        "\\dlproc_top.engine.dot": {"num_cells_by_type": {"LUT6": 3}},
        "\\dlproc_top.csr": {"num_cells_by_type": {"RAMB18E2": 1}},
    }}
    modules, total = _modules_from_stat(stat, ["dlproc_top.engine", "dlproc_top.csr"])
    assert modules["engine"] == ResourceCounts(LUT=6, FF=10, DSP=4)
    assert modules["csr"].BRAM36 == 0.5
    assert modules["buffers"] == ResourceCounts(LUT=2, BRAM36=1)
    assert total == ResourceCounts(LUT=8, FF=10, DSP=4, BRAM36=1.5)


@pytest.mark.parametrize(("width", "depth", "blocks"), [
    (32, 1024, 1.0),     # 1024 x 36
    (256, 128, 4.0),     # 4 x 512 x 72
    (64, 256, 1.0),      # 512 x 72
    (80, 1024, 2.5),     # 5 x RAMB18 1024 x 18
    (512, 32, 0.0),      # LUT RAM
    (72, 2048, 4.0),     # 4 x 512 x 72
])
def test_bram_mapping_model(width: int, depth: int, blocks: float) -> None:
    assert _bram_blocks(width, depth) == blocks


def test_model_is_instant_and_judges_the_zcu102_preset() -> None:
    cfg = ProcessorConfig.preset("zcu102_int8")
    model_resources(TINY)  # imports the gateware's buffer geometry once
    start = time.monotonic()
    report = estimate_resources(cfg, synthesize=False)
    assert time.monotonic() - start < 0.5
    assert report.source == "model"
    ci, co, fc = cfg.conv_ic_lanes, cfg.conv_oc_lanes, cfg.fc_threads
    assert report.total.DSP >= ci * co + 2 * co + fc
    assert report.fits, str(report)
    huge = cfg.replace(conv_ic_lanes=64, conv_oc_lanes=256, fc_threads=64, axi_data_width=512)
    assert not model_resources(huge).fits
    assert "does NOT fit (DSP" in str(model_resources(huge))


def test_report_round_trip_and_table() -> None:
    report = model_resources(TINY, "kv260")
    again = ResourceReport.from_dict(report.to_dict())
    assert again.total == report.total and again.board == BOARDS["kv260"]
    text = str(report)
    for word in ("module", "total", "available", "utilization", "fits on kv260", TINY.hardware_hash):
        assert word in text


def test_unknown_board() -> None:
    with pytest.raises(ValueError, match="unknown board 'zcu999'; boards are zcu102"):
        model_resources(TINY, "zcu999")


def _synthesized(config: ProcessorConfig, item: str) -> tuple[ResourceReport, str | None]:
    """The Yosys report of ``config`` on the ZCU102: recorded, or synthesized when the record is stale."""
    figures, stale = recorded_figures("resources", item, synthesis_key(config, "zcu102"),
                                      lambda: estimate_resources(config, synthesize=True, timeout_s=1800).to_dict())
    report = ResourceReport.from_dict(figures)
    assert report.config.hardware_hash == config.hardware_hash
    return report, stale


@pytest.mark.slow
def test_synthesis_of_two_small_configurations() -> None:
    (narrow, stale_narrow), (tiny, stale_tiny) = _synthesized(NARROW, "narrow"), _synthesized(TINY, "tiny_int8")
    for report in (narrow, tiny):
        assert report.source == "synthesis"
        assert {"engine", "dma", "fetch", "csr", "buffers"} <= set(report.modules)
        assert report.fits
        assert sum(m.DSP for m in report.modules.values()) == report.total.DSP
    # Four more output lanes: 4 x 4 more int8 products and 4 more 32 x 16 requantization multipliers (2 DSPs each).
    assert tiny.total.DSP - narrow.total.DSP == 4 * 4 + 2 * 4
    assert tiny.modules["engine"].DSP > narrow.modules["engine"].DSP
    assert tiny.total.BRAM36 > narrow.total.BRAM36
    # The analytical model holds within its stated tolerance for both.
    for report in (narrow, tiny):
        model = model_resources(report.config)
        for kind, tol in MODEL_TOLERANCE.items():
            syn, est = getattr(report.total, kind), getattr(model.total, kind)
            assert abs(est - syn) <= tol * syn + 1e-9, f"{kind}: model {est} vs synthesis {syn} for {report.config}"
    for stale in (stale_narrow, stale_tiny):
        report_stale(stale)


@pytest.mark.slow  # one real (small) Yosys run: 20 s on an idle machine, minutes on a loaded one
def test_synthesis_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The small stand-in design: the second call answers from the cache, and the key follows the configuration.
    from rtl_fixtures.standin_top import StandInTop

    monkeypatch.setenv("DLPROC_CACHE", str(tmp_path))
    config = ProcessorConfig(ddr_size=1 << 20)
    first = estimate_resources(config, synthesize=True, top=StandInTop, timeout_s=600)
    assert not first.cached and first.source == "synthesis" and first.total.LUT > 0
    start = time.monotonic()
    again = estimate_resources(config, synthesize=True, top=StandInTop)
    assert again.cached and again.total == first.total
    assert time.monotonic() - start < 30
    assert synthesis_key(config, top=StandInTop) != synthesis_key(config.replace(axi_data_width=64), top=StandInTop)
