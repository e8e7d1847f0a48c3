"""Shared pytest set-up.

Warnings: the ``filterwarnings`` list in ``pyproject.toml`` turns DeprecationWarnings that point into our own code
(``dlproc.*``, the test modules, ``rtl_fixtures``) into errors and leaves third-party ones (cocotbext-axi's use
of deprecated cocotb 2 APIs) alone. It lives there rather than here so that ``python -m pytest tests/x.py`` and
``make test`` behave the same.

Fixtures: ``repo_root``, and the Verilator stand-in simulator (``standin_config``, ``standin_library``) that the
harness tests use; building it takes about 20 s once, then it comes from ``${DLPROC_CACHE:-~/.cache/dlproc}``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dlproc.processor.config import ProcessorConfig

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_report_header(config: pytest.Config) -> list[str]:
    try:
        from dlproc.sim.verilator.build import cache_root
    except Exception as exc:  # the header must never break collection
        return [f"dlproc verilator cache: unavailable ({exc})"]
    return [f"dlproc verilator cache: {cache_root() / 'verilator'}"]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root directory."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def standin_config() -> ProcessorConfig:
    """Configuration of the stand-in top: 128-bit AXI, 40-bit addresses, 1 MiB DDR window at 0x4000_0000."""
    return ProcessorConfig(ddr_size=1 << 20)


@pytest.fixture(scope="session")
def standin_library(standin_config: ProcessorConfig) -> Path:
    """The Verilator simulator library of ``tests/rtl_fixtures/standin_top.py`` for :func:`standin_config`."""
    from rtl_fixtures.standin_top import StandInTop

    from dlproc.sim.verilator import build_simulator

    return build_simulator(standin_config, top=StandInTop)
