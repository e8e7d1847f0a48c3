"""Errors of the compiler front end: every message names the node, the operator and what is accepted.

All of them derive from :class:`CompileError`, so a caller can catch one class for "this model cannot be compiled".
"""

from __future__ import annotations

__all__ = ["CompileError", "ModelError", "OpsetError", "ShapeError", "UnsupportedOperatorError"]


class CompileError(Exception):
    """Base class of every error the compiler raises for a model it cannot compile."""


class ModelError(CompileError):
    """The ONNX model is malformed: the checker rejects it, a value is undefined, an attribute is invalid."""


class OpsetError(CompileError):
    """The model's default-domain opset is outside the range the front end implements."""


class ShapeError(CompileError):
    """A tensor shape is unknown, dynamic (other than the batch axis) or not what the operator expects."""


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
