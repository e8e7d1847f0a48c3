"""The processor top level with stub engines under Verilator (bench: ``rtl/bench_top.py``)."""

from __future__ import annotations

import pytest

pytest.importorskip("cocotb")
pytest.importorskip("cocotbext.axi")

from dlproc.processor.config import ProcessorConfig  # noqa: E402

from .benches import stub_processor  # noqa: E402
from .runner import CocotbBench, case_filter, cocotb_cases  # noqa: E402

CONFIG = ProcessorConfig.preset("tiny_int8")


@pytest.fixture(scope="session")
def top_bench() -> CocotbBench:
    bench = CocotbBench("stub_top", "dlproc_top", CONFIG, lambda: stub_processor(CONFIG))
    bench.build()
    return bench


CASES = ["register_map", *cocotb_cases("load_store_programs", idle=[False, True], backpressure=[False, True]),
         "stops_and_errors", "bus_errors", "dma_throughput",
         *cocotb_cases("random_programs", backpressure=[False, True])]


@pytest.mark.parametrize("case", CASES)
def test_top(top_bench, tmp_path, case):
    top_bench.run("rtl.bench_top", tmp_path, test_filter=case_filter(case))
