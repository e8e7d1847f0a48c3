"""Shared pytest set-up.

Warnings: the ``filterwarnings`` list in ``pyproject.toml`` turns DeprecationWarnings that point into our own code
(``dlproc.*``, the test modules, ``rtl_fixtures``) into errors and leaves third-party ones (cocotbext-axi's use
of deprecated cocotb 2 APIs) alone. It lives there rather than here so that ``python -m pytest tests/x.py`` and
``make test`` behave the same.

Fixtures: ``repo_root``; ``sim_device``, the Verilator devices of the session (one per configuration, opened once
and shared by every test that simulates a configuration); and the Verilator stand-in simulator (``standin_config``,
``standin_library``) that the harness tests use. Simulator builds come from ``${DLPROC_CACHE:-~/.cache/dlproc}``
after the first (minutes per configuration).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
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
def sim_device() -> Iterator[Callable[[ProcessorConfig | str], object]]:
    """``sim_device(config or preset name)``: the session's VerilatorDevice of that configuration (opened once)."""
    from dlproc.sim.verilator.device import VerilatorDevice

    opened: dict[str, VerilatorDevice] = {}

    def get(config: ProcessorConfig | str) -> VerilatorDevice:
        cfg = ProcessorConfig.preset(config) if isinstance(config, str) else config
        key = json.dumps(cfg.to_dict(), sort_keys=True)
        if key not in opened:
            opened[key] = VerilatorDevice(cfg)
        return opened[key]

    yield get
    for dev in opened.values():
        dev.close()


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
