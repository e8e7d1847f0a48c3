"""The errors dlproc raises for input it refuses: one hierarchy under :class:`DlprocError`.

Every message is one line that names the thing (node, tensor, file, field), the place and what is accepted; the
command line prints it as ``dlproc COMMAND: error: MESSAGE`` and exits with status 2 (see ``docs/errors.md``).
Each class also derives from the built-in exception a caller would have caught before (``ValueError``,
``OSError``), so existing ``except ValueError`` code keeps working.
"""

from __future__ import annotations

__all__ = ["DlprocError", "ConfigError", "CompileError", "ModelError", "OpsetError", "ShapeError",
           "UnsupportedOperatorError", "CalibrationError", "InputDataError", "BundleError", "OutputError"]


class DlprocError(Exception):
    """Base class of every refusal of dlproc: bad input, a bad configuration, an output it will not write."""


class ConfigError(DlprocError, ValueError):
    """An invalid processor configuration; the message names the field and the allowed values."""


class CompileError(DlprocError):
    """Base class of every error the compiler raises for a model it cannot compile."""


class ModelError(CompileError):
    """The ONNX model is malformed: the checker rejects it, a value is undefined or not finite, an attribute is
    invalid, or it does not fit the processor's DDR window."""


class OpsetError(CompileError):
    """The model's default-domain opset is outside the range the front end implements."""


class ShapeError(CompileError):
    """A tensor shape is unknown, dynamic (other than the batch axis), empty, or not what the operator expects."""


class UnsupportedOperatorError(CompileError):
    """An operator can neither be mapped to the processor nor executed on the host.

    Parameters
    ----------
    node : str
        Name of the ONNX node.
    op_type : str
        Its operator (with the domain when it is not the default one).
    reason : str
        Why it cannot be compiled.
    supported : iterable of str
        The operators the front end maps to the processor (for the message).
    """

    def __init__(self, node: str, op_type: str, reason: str, supported: tuple[str, ...] | list[str] = ()):
        self.node = node
        self.op_type = op_type
        self.reason = reason
        self.supported = tuple(supported)
        listing = f"; the processor supports {', '.join(self.supported)}" if self.supported else ""
        super().__init__(f"node {node!r} ({op_type}): {reason}{listing}")


class InputDataError(DlprocError, ValueError):
    """Input data (a ``.npy``/``.npz`` file or an array) that cannot be used: unreadable, empty, of the wrong shape or
    type, integer-typed without a stated scale, or holding NaN/Inf."""


class CalibrationError(InputDataError):
    """Calibration data that would give meaningless ranges: non-finite or constant samples (the message names the
    sample index)."""


class BundleError(DlprocError, ValueError):
    """A bundle that cannot be loaded (missing or mistyped manifest field, a blob whose digest or size differs, no
    segments) or does not match the processor it is to run on."""


class OutputError(DlprocError, OSError):
    """An output dlproc will not write: it exists (pass ``--force`` / ``overwrite=True``), it is of another kind, or
    its folder cannot be written."""
