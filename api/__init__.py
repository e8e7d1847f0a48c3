"""dlproc: an open deep learning processor generator for FPGAs.

The public API: :class:`ProcessorConfig` describes a processor, :class:`Workflow` takes an ONNX network through
calibration, compilation and execution on a target ("ref" golden model, "sim" RTL in Verilator, "fpga" board).
"""

from dlproc.processor.config import ConfigError, ProcessorConfig

__all__ = ["ProcessorConfig", "ConfigError"]
__version__ = "0.1.0"
