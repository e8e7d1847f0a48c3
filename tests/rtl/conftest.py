"""The Verilator builds shared by the processor benches (one per pytest session, cached across sessions)."""

from __future__ import annotations

import pytest

from dlproc.processor.config import ProcessorConfig

from .benches import preloaded_processor
from .runner import CocotbBench

#: Configuration of every cocotb bench.
BENCH_CONFIG = ProcessorConfig.preset("tiny_int8")


@pytest.fixture(scope="session")
def processor_bench() -> CocotbBench:
    """The complete processor (output buffer preloaded), Verilated for cocotb."""
    pytest.importorskip("cocotb")
    pytest.importorskip("cocotbext.axi")
    bench = CocotbBench("processor", "dlproc_top", BENCH_CONFIG, lambda: preloaded_processor(BENCH_CONFIG))
    bench.build()
    return bench
