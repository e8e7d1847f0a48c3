"""dlproc: an open deep learning processor generator for FPGAs.

The public API: :class:`ProcessorConfig` describes a processor, :class:`Workflow` takes an ONNX network through
calibration, compilation and execution on a target ("ref" golden model, "sim" RTL in Verilator, "fpga" board),
:class:`CompiledNetwork` is the compiled bundle, :class:`Profile` the per-layer timing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dlproc.processor.config import ConfigError, ProcessorConfig

if TYPE_CHECKING:
    from dlproc.compiler.errors import CompileError
    from dlproc.compiler.network import CompiledNetwork
    from dlproc.runtime.profile import Profile
    from dlproc.runtime.workflow import Workflow

#: Public names imported on first use (PEP 562), so that ``import dlproc.sim...`` (opening a simulator, the
#: build cache) does not pay for the compiler's and onnx's imports.
_LAZY = {"CompileError": "dlproc.compiler.errors", "CompiledNetwork": "dlproc.compiler.network",
         "Profile": "dlproc.runtime.profile", "Workflow": "dlproc.runtime.workflow"}

__all__ = ["ProcessorConfig", "ConfigError", "Workflow", "CompiledNetwork", "CompileError", "Profile",
           "estimate_resources", "explore"]
__version__ = "0.1.0"


def estimate_resources(config, board: str = "zcu102", **options):
    """LUT, FF, DSP and BRAM of a processor configuration on a board (see :mod:`dlproc.boards.resources`)."""
    from dlproc.boards.resources import estimate_resources as _estimate

    return _estimate(ProcessorConfig.load(config), board=board, **options)


def explore(networks, *, fps: float, board: str = "zcu102", dtype: str = "int8", objective: str = "dsp", **options):
    """The smallest processor configuration reaching ``fps`` on every network (see :mod:`dlproc.runtime.explore`)."""
    from dlproc.runtime.explore import explore as _explore

    return _explore(networks, fps=fps, board=board, dtype=dtype, objective=objective, **options)
def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dlproc' has no attribute {name!r}")
