"""The processor top level with stub engines under Verilator (bench: ``rtl/bench_top.py``)."""

from __future__ import annotations

import pytest

pytest.importorskip("cocotb")
pytest.importorskip("cocotbext.axi")

from dlproc.processor.config import ProcessorConfig  # noqa: E402

from .benches import stub_processor  # noqa: E402
from .runner import CocotbBench  # noqa: E402

CONFIG = ProcessorConfig.preset("tiny_int8")


@pytest.fixture(scope="session")
def top_bench() -> CocotbBench:
    bench = CocotbBench("stub_top", "dlproc_top", CONFIG, lambda: stub_processor(CONFIG))
    bench.build()
    return bench


@pytest.mark.parametrize("testcase", ["register_map", "load_store_programs", "stops_and_errors", "bus_errors",
                                      "random_programs"])
def test_top(top_bench, tmp_path, testcase):
    top_bench.run("rtl.bench_top", tmp_path, test_filter=rf"\.{testcase}(/|$)")
