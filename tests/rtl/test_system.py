"""Random small layers on the complete processor under Verilator (bench: ``rtl/bench_system.py``)."""

from __future__ import annotations

import pytest

from .runner import case_filter, cocotb_cases


@pytest.mark.parametrize("case", cocotb_cases("random_layers", backpressure=[False, True]))
def test_random_layers(processor_bench, tmp_path, case):
    processor_bench.run("rtl.bench_system", tmp_path, test_filter=case_filter(case))
