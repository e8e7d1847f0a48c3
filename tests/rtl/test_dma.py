"""The DMA engine under Verilator with cocotbext-axi's AxiRam (bench: ``rtl/bench_dma.py``)."""

from __future__ import annotations

import pytest

pytest.importorskip("cocotb")
pytest.importorskip("cocotbext.axi")

from dlproc.processor.config import ProcessorConfig  # noqa: E402

from .benches import DmaBench  # noqa: E402
from .runner import CocotbBench, case_filter, cocotb_cases  # noqa: E402

CONFIG = ProcessorConfig.preset("tiny_int8")


@pytest.fixture(scope="session")
def dma_bench() -> CocotbBench:
    bench = CocotbBench("dma_bench", "dma_bench", CONFIG, lambda: DmaBench(CONFIG))
    bench.build()
    return bench


GENERATORS = dict(idle=[False, True], backpressure=[False, True])
CASES = [*cocotb_cases("load_lengths_and_4k", **GENERATORS), *cocotb_cases("store_patterns_and_guards", **GENERATORS),
         "window_refusals", "bus_errors", *cocotb_cases("fc_weight_stream", backpressure=[False, True])]


@pytest.mark.parametrize("case", CASES)
def test_dma(dma_bench, tmp_path, case):
    dma_bench.run("rtl.bench_dma", tmp_path, test_filter=case_filter(case))
