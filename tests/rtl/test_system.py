"""The complete processor (real compute engine and fc unit) under Verilator (bench: ``rtl/bench_system.py``)."""

from __future__ import annotations

import pytest

pytest.importorskip("cocotb")
pytest.importorskip("cocotbext.axi")

from dlproc.processor.config import ProcessorConfig  # noqa: E402
from dlproc.processor.top import DLProcessor  # noqa: E402

from .runner import CocotbBench, case_filter, cocotb_cases  # noqa: E402

CONFIG = ProcessorConfig.preset("tiny_int8")


@pytest.fixture(scope="session")
def system_bench() -> CocotbBench:
    bench = CocotbBench("system", "dlproc_top", CONFIG, lambda: DLProcessor(config=CONFIG))
    bench.build()
    return bench


@pytest.mark.parametrize("case", cocotb_cases("random_layers", backpressure=[False, True]))
def test_random_layers(system_bench, tmp_path, case):
    system_bench.run("rtl.bench_system", tmp_path, test_filter=case_filter(case))
