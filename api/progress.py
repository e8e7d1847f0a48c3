"""Progress of long steps on stderr: the one place that decides how a phase (elaboration, a build, ...) is shown.

:func:`phase` wraps a step that can take minutes (elaborating the processor, emitting Verilog or RTLIL, a
Verilator build, a Yosys synthesis, place and route). On a terminal it shows a tqdm status line whose elapsed
time ticks every second; otherwise (a log file, CI) it prints a line when the step starts, one every
:data:`HEARTBEAT_S` seconds while it runs, and one with the elapsed time when it ends, so no minute passes
silently. Loops with a known length (calibration samples, frames) use :func:`bar`, a tqdm bar that is shown on
a terminal only. ``DLPROC_PROGRESS=0`` silences both.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any, TypeVar

__all__ = ["phase", "bar", "enabled", "HEARTBEAT_S"]

#: Seconds between "still running" lines when stderr is not a terminal.
HEARTBEAT_S = 30.0

T = TypeVar("T")


def enabled() -> bool:
    """False when ``DLPROC_PROGRESS`` is ``0`` (or empty): then phases and bars print nothing."""
    return os.environ.get("DLPROC_PROGRESS", "1").strip() not in ("0", "", "false", "no")


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def phase(what: str, *, quiet: bool = False, stream: IO[str] | None = None) -> Iterator[None]:
    """Show that ``what`` is running, with its elapsed time, until the ``with`` block ends.

    Parameters
    ----------
    what : str
        The step, e.g. ``"elaborating DLProcessor [3f2a...] to Verilog"``.
    quiet : bool
        Print nothing (callers pass their own ``quiet`` option through).
    stream : file, optional
        Where to write (default ``sys.stderr``).

    Examples
    --------
    >>> with phase("synthesizing with Yosys"):   # doctest: +SKIP
    ...     run_yosys()
    dlproc: synthesizing with Yosys ...
    dlproc: synthesizing with Yosys: done in 41.2 s
    """
    if quiet or not enabled():
        yield
        return
    out = stream if stream is not None else sys.stderr
    start = time.monotonic()
    stop = threading.Event()
    if _is_tty(out):
        from tqdm import tqdm

        # Size from shutil (which falls back to 80x24): a terminal reporting no size (some ptys) makes tqdm hide
        # the line.
        size = shutil.get_terminal_size()
        status = tqdm(total=None, desc=what, bar_format="dlproc: {desc} [{elapsed}]", file=out, leave=True,
                      ncols=size.columns, nrows=size.lines)

        def tick() -> None:
            while not stop.wait(1.0):
                status.refresh()
    else:
        status = None
        print(f"dlproc: {what} ...", file=out, flush=True)

        def tick() -> None:
            while not stop.wait(HEARTBEAT_S):
                print(f"dlproc: {what}: still running ({time.monotonic() - start:.0f} s)", file=out, flush=True)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    outcome = "failed after"
    try:
        yield
        outcome = "done in"
    finally:
        stop.set()
        thread.join()
        seconds = time.monotonic() - start
        if status is not None:
            status.set_description_str(f"{what}: {outcome} {seconds:.1f} s", refresh=False)
            status.bar_format = "dlproc: {desc}"
            status.close()
        else:
            print(f"dlproc: {what}: {outcome} {seconds:.1f} s", file=out, flush=True)


def bar(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
        show: bool | None = None, **options: Any) -> Iterable[T]:
    """``iterable`` wrapped in a tqdm bar on stderr (shown by default only when stderr is a terminal).

    Parameters
    ----------
    iterable : iterable
    total : int, optional
        Length, if ``iterable`` has none.
    desc, unit : str
        tqdm's label and unit.
    show : bool, optional
        Force the bar on or off (default: on when stderr is a terminal and progress is :func:`enabled`).
    **options
        Passed to tqdm.
    """
    if show is None:
        show = enabled() and _is_tty(sys.stderr)
    if not show:
        return iterable
    from tqdm import tqdm

    size = shutil.get_terminal_size()
    options = {"ncols": size.columns, "nrows": size.lines, **options}
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, **options)
