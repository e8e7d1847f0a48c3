"""The processor top level under Verilator: registers, programs, errors (bench: ``rtl/bench_top.py``)."""

from __future__ import annotations

import pytest

from .runner import case_filter, cocotb_cases

CASES = ["register_map", *cocotb_cases("load_store_programs", idle=[False, True], backpressure=[False, True]),
         "stops_and_errors", "bus_errors", "dma_throughput",
         *cocotb_cases("random_programs", backpressure=[False, True])]


@pytest.mark.parametrize("case", CASES)
def test_top(processor_bench, tmp_path, case):
    processor_bench.run("rtl.bench_top", tmp_path, test_filter=case_filter(case))
