"""Build an Amaranth design with Verilator for cocotb (cached) and run a cocotb test module on it.

A build is keyed, without elaborating, by the configuration's hardware hash, the generator's sources
(``dlproc.processor`` and the bench modules), the build flags and the tool versions, and kept by
:func:`dlproc.cache.cached_entry` under ``${DLPROC_CACHE:-~/.cache/dlproc}/cocotb/<name>-<config hash>-<key>/``,
so a pytest session builds each bench once and later sessions reuse it without generating Verilog.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from amaranth.back import verilog
from amaranth.lib import wiring

from dlproc.cache import cached_entry, make_key, processor_sources, source_digest, tool_versions
from dlproc.processor.config import ProcessorConfig
from dlproc.progress import phase
from dlproc.sim.verilator.toolchain import verilator_env

__all__ = ["CocotbBench", "cocotb_cases", "case_filter"]

#: Verilator flags of the cocotb builds: Amaranth's Verilog trips width lint warnings that are not errors.
BUILD_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNOPTFLAT", "-O2", "--x-assign", "fast",
              "--x-initial", "fast"]


class CocotbBench:
    """One Verilated design plus the cocotb runner to execute test modules on it.

    Parameters
    ----------
    name : str
        Bench name (part of the cache directory name).
    toplevel : str
        Verilog module name of the design.
    config : ProcessorConfig
        The configuration (its hash is part of the cache directory name).
    factory : callable
        ``factory() -> wiring.Component``: the design.
    sources : sequence of Path, optional
        Source files of the design besides ``dlproc.processor`` (part of the cache key; default the bench
        designs in ``benches.py``).
    """

    def __init__(self, name: str, toplevel: str, config: ProcessorConfig,
                 factory: Callable[[], wiring.Component], sources: Sequence[Path] | None = None):
        self.name, self.toplevel, self.config = name, toplevel, config
        self._factory = factory
        self._sources = list(sources) if sources is not None else [Path(__file__).with_name("benches.py")]
        self._build_dir: Path | None = None

    def _environment(self) -> None:
        env = verilator_env()
        for key in ("VERILATOR_ROOT", "PATH", "MAKEFLAGS"):
            os.environ[key] = env[key]
        for outer in ("MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS"):
            os.environ.pop(outer, None)

    def build(self) -> Path:
        """Generate the Verilog and Verilate it, unless the cache holds this exact build; return the build dir."""
        if self._build_dir is not None:
            return self._build_dir
        from cocotb_tools.runner import get_runner

        self._environment()
        key = make_key({"hardware_hash": self.config.hardware_hash, "toplevel": self.toplevel,
                        "sources": source_digest([processor_sources(), *self._sources]),
                        "args": BUILD_ARGS, "tools": tool_versions("verilator", "cocotb")})

        def build(work: Path) -> None:
            with phase(f"elaborating and emitting the Verilog of the {self.name} bench"):
                text = verilog.convert(self._factory(), name=self.toplevel)
            source = work / f"{self.toplevel}.v"
            source.write_text(text)
            with phase(f"Verilator build of the {self.name} bench for cocotb"):
                get_runner("verilator").build(sources=[source], hdl_toplevel=self.toplevel, build_dir=work,
                                              build_args=BUILD_ARGS, timescale=("1ns", "1ps"))

        build_dir = cached_entry("cocotb", key, build, [self.toplevel],
                                 name=f"{self.name}-{self.config.hardware_hash}-{key}")
        self._build_dir = build_dir
        return build_dir

    def run(self, module: str, test_dir: Path, *, test_filter: str | None = None,
            extra_env: dict[str, str] | None = None, seed: int = 1) -> None:
        """Run the cocotb tests of ``module`` (dotted name importable from ``tests/``); fail on any failure.

        ``test_filter`` is a regular expression on the test names (parametrized tests are named
        ``name/param=value/...``).
        """
        from cocotb_tools.runner import get_results, get_runner

        build_dir = self.build()
        self._environment()
        runner = get_runner("verilator")
        results = runner.test(test_module=module, hdl_toplevel=self.toplevel, hdl_toplevel_lang="verilog",
                              build_dir=build_dir, test_dir=test_dir, test_filter=test_filter, seed=seed,
                              extra_env=dict(extra_env or {}), timescale=("1ns", "1ps"))
        total, failed = get_results(results)
        assert total > 0, f"no cocotb test of {module} ran (see {results})"
        assert failed == 0, f"{failed} of {total} cocotb tests of {module} failed (see the log above and {results})"


def cocotb_cases(name: str, **parameters: list) -> list[str]:
    """Names of the cases of a (parametrized) cocotb test, as cocotb prints them: ``name/a=1/b=False``.

    Each case runs in a simulator of its own: buffers and DDR keep their contents between the cocotb tests of
    one simulator run, while every test starts with a fresh golden model.
    """
    import itertools

    keys = list(parameters)
    return ["/".join([name, *(f"{k}={v}" for k, v in zip(keys, values, strict=True))])
            for values in itertools.product(*(parameters[k] for k in keys))]


def case_filter(case: str) -> str:
    """The COCOTB_TEST_FILTER regular expression selecting exactly one case."""
    import re

    return rf"\.{re.escape(case)}$"
