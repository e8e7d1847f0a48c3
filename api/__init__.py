"""dlproc: an open deep learning processor generator for FPGAs.

The public API: :class:`ProcessorConfig` describes a processor, :class:`Workflow` takes an ONNX network through
calibration, compilation and execution on a target ("ref" golden model, "sim" RTL in Verilator, "fpga" board),
:class:`CompiledNetwork` is the compiled bundle, :class:`Profile` the per-layer timing.
"""

from dlproc.compiler.errors import CompileError
from dlproc.compiler.network import CompiledNetwork
from dlproc.processor.config import ConfigError, ProcessorConfig
from dlproc.runtime.profile import Profile
from dlproc.runtime.workflow import Workflow

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
