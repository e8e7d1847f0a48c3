"""Figures of expensive flows recorded in the repository (``tests/recorded/*.json``), keyed by their inputs' digest.

The Yosys resource syntheses and the ECP5 place and route take minutes each. A test that needs their figures calls
:func:`recorded_figures` with the digest of the flow's inputs (computed without elaborating: configuration hash,
generator sources, tool versions; :func:`dlproc.boards.resources.synthesis_key`, :func:`dlproc.boards.ecp5.ecp5_key`):

* the record holds that digest: the recorded figures are returned and the test checks them against its
  expectations (the analytical model, the array size, ...), without running the flow;
* it does not (the processor, the flow or a tool changed): the flow runs, the test checks the fresh figures, and
  then :func:`report_stale` warns with :data:`REFRESH_COMMAND` (a failure with ``DLPROC_STRICT_RECORDS=1``), so the
  record is brought up to date; a stale record costs the flow's time in CI, never a wrong pass;
* ``DLPROC_REFRESH_RECORDS=1``: the flow always runs and the record is rewritten with its figures.

A record file maps an item name to ``{"key": digest, "figures": {...}}``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["recorded_figures", "previous_figures", "report_stale", "REFRESH_COMMAND", "RECORDS_DIR"]

RECORDS_DIR = Path(__file__).resolve().parent / "recorded"
#: How a developer refreshes the records after changing the processor or a tool version.
REFRESH_COMMAND = ("DLPROC_REFRESH_RECORDS=1 .venv/bin/python -m pytest tests/test_resources.py tests/test_boards.py "
                   "-m slow  (then commit tests/recorded/)")


def refreshing() -> bool:
    """Whether ``DLPROC_REFRESH_RECORDS`` asks to rerun the flows and rewrite the records."""
    return os.environ.get("DLPROC_REFRESH_RECORDS", "").strip() not in ("", "0")


def recorded_figures(record: str, item: str, key: str,
                     compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """The figures of ``item`` for inputs digest ``key``: recorded, or computed by ``compute()``.

    Returns
    -------
    figures : dict
    stale : str or None
        None when the figures came from the record or the record was refreshed; otherwise the message the test
        must fail with once it has checked the figures.
    """
    path = RECORDS_DIR / f"{record}.json"
    records = json.loads(path.read_text()) if path.exists() else {}
    entry = records.get(item)
    if entry is not None and entry.get("key") == key and not refreshing():
        return entry["figures"], None
    figures = compute()
    if refreshing():
        records[item] = {"key": key, "figures": figures}
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
        return figures, None
    was = "no record" if entry is None else f"recorded for inputs {entry.get('key')}"
    return figures, (f"{path.name}[{item!r}] is stale ({was}, inputs are now {key}); the flow ran and its figures "
                     f"passed the checks. Refresh the record: {REFRESH_COMMAND}")


class StaleRecord(UserWarning):
    """A recorded result whose inputs changed: the flow ran and passed its checks; refresh the record."""


def report_stale(message: str | None) -> None:
    """Warn that a record is stale (after the fresh figures passed the test's checks); fail instead when
    ``DLPROC_STRICT_RECORDS`` is set (for the developer who wants the record refreshed before committing)."""
    if not message:
        return
    if os.environ.get("DLPROC_STRICT_RECORDS", "").strip() not in ("", "0"):
        import pytest

        pytest.fail(message)
    warnings.warn(message, StaleRecord, stacklevel=2)


def previous_figures(record: str, item: str) -> dict[str, Any] | None:
    """The figures last recorded for ``item`` whatever their inputs (for regression checks of fresh figures)."""
    path = RECORDS_DIR / f"{record}.json"
    if not path.exists():
        return None
    entry = json.loads(path.read_text()).get(item)
    return None if entry is None else entry["figures"]
