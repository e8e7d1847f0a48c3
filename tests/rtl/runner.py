"""Build an Amaranth design with Verilator for cocotb (cached) and run a cocotb test module on it.

A build is keyed by the Verilog text, the build flags and the Verilator version, and kept under
``${DLPROC_CACHE:-~/.cache/dlproc}/cocotb/<name>-<config hash>-<key>/``, so a pytest session builds each bench
once and later sessions reuse it. A lock file serialises concurrent builders of the same key.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from amaranth.back import verilog
from amaranth.lib import wiring

from dlproc.processor.config import ProcessorConfig
from dlproc.sim.verilator.build import cache_root
from dlproc.sim.verilator.toolchain import verilator_env, verilator_version

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
    """

    def __init__(self, name: str, toplevel: str, config: ProcessorConfig,
                 factory: Callable[[], wiring.Component]):
        self.name, self.toplevel, self.config = name, toplevel, config
        self._factory = factory
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
        text = verilog.convert(self._factory(), name=self.toplevel)
        key = hashlib.sha256("\n".join([text, " ".join(BUILD_ARGS), verilator_version()]).encode()).hexdigest()[:16]
        build_dir = cache_root() / "cocotb" / f"{self.name}-{self.config.hardware_hash}-{key}"
        build_dir.parent.mkdir(parents=True, exist_ok=True)
        lock_path = build_dir.parent / f"{build_dir.name}.lock"
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (build_dir / "ok").exists():
                shutil.rmtree(build_dir, ignore_errors=True)
                build_dir.mkdir()
                source = build_dir / f"{self.toplevel}.v"
                source.write_text(text)
                runner = get_runner("verilator")
                runner.build(sources=[source], hdl_toplevel=self.toplevel, build_dir=build_dir,
                             build_args=BUILD_ARGS, timescale=("1ns", "1ps"))
                (build_dir / "ok").write_text(key)
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
