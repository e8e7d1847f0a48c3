"""Errors of the compiler front end: every message names the node, the operator and what is accepted.

All of them derive from :class:`CompileError`, so a caller can catch one class for "this model cannot be compiled".
The classes are defined once in :mod:`dlproc.errors` (the hierarchy of every dlproc refusal); this module keeps the
compiler's import path.
"""

from __future__ import annotations

from dlproc.errors import CompileError, ModelError, OpsetError, ShapeError, UnsupportedOperatorError

__all__ = ["CompileError", "ModelError", "OpsetError", "ShapeError", "UnsupportedOperatorError"]
