"""Running many independent tasks on Ray: the sweep points of ``dlproc explore`` and the frames of
``Workflow.validate(..., workers=N)``.

One function, :func:`run_tasks`, hands ``fn(item, shared)`` for every item to Ray and yields a :class:`TaskResult` per
item as it completes. A task that raises, or whose worker process dies (a crashed simulator), or that runs past its
timeout, comes back as a result with :attr:`TaskResult.error` set; the other items are not lost.

Where it runs:

* ``address=None`` and no ``RAY_ADDRESS`` in the environment: a local Ray started for the call with ``workers`` CPUs
  (default: all cores), without the dashboard, and shut down afterwards.
* ``address="ray://host:10001"`` / ``"auto"`` or ``RAY_ADDRESS``: an existing cluster (its nodes need dlproc
  installed in the same version; ``fn`` and ``shared`` are pickled to them).
* a Ray already initialised by the caller (e.g. a test fixture) is used as it is and left running.
* ``workers=0``: no Ray at all, the items run one after the other in this process (the fallback when Ray is not
  installed: ``pip install 'dlproc[explore]'``).
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["TaskResult", "run_tasks", "ray_available"]


@dataclass
class TaskResult:
    """The outcome of one task.

    Attributes
    ----------
    index : int
        Position of the item in the input.
    item : Any
        The item.
    value : Any
        What ``fn`` returned (``None`` when it failed).
    error : str or None
        One line saying why the task failed (exception type and message, worker crash, timeout).
    seconds : float
        Wall time from submission to the result.
    """

    index: int
    item: Any
    value: Any = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def ray_available() -> bool:
    """Whether the ``ray`` package is installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    # RayTaskError's message starts with the remote traceback header: keep the last line (the exception itself).
    tail = text[-1] if text else ""
    return f"{type(exc).__name__}: {tail}" if tail else type(exc).__name__


@contextlib.contextmanager
def ray_session(workers: int | None = None, address: str | None = None) -> Iterator[Any]:
    """A connected Ray: the caller's if already initialised, a cluster by ``address``/``RAY_ADDRESS``, or a local one.

    Parameters
    ----------
    workers : int, optional
        CPUs of a local Ray (default: all cores). Ignored for a cluster.
    address : str, optional
        Cluster address (``"auto"``, ``"ray://head:10001"``); default ``RAY_ADDRESS`` or a new local Ray.
    """
    try:
        import ray
    except ImportError:
        raise ImportError("Ray is not installed: pip install 'dlproc[explore]' (or pass workers=0 to run in this "
                          "process)") from None
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": False}
    if address:
        ray.init(address=address, **options)
    else:
        ray.init(num_cpus=workers or os.cpu_count() or 1, **options)
    try:
        yield ray
    finally:
        ray.shutdown()


def run_tasks(fn: Callable[[Any, Any], Any], items: Iterable[Any], *, shared: Any = None, workers: int | None = None,
              address: str | None = None, timeout_s: float | None = None,
              on_result: Callable[[TaskResult], None] | None = None) -> list[TaskResult]:
    """Run ``fn(item, shared)`` for every item, on Ray (or in this process with ``workers=0``).

    Parameters
    ----------
    fn : callable
        A module-level function (it is pickled to the workers). Its exceptions become :attr:`TaskResult.error`.
    items : iterable
        One task per item.
    shared : Any
        Passed to every call; put in Ray's object store once (networks, calibrated graphs).
    workers, address
        See :func:`ray_session`; ``workers=0`` runs serially in this process without Ray.
    timeout_s : float, optional
        A task still running this long after the sweep started waiting for it is cancelled and reported as timed out.
    on_result : callable, optional
        Called with each result as it completes (progress bars).

    Returns
    -------
    list of TaskResult
        In the order of ``items``.
    """
    items = list(items)
    results: list[TaskResult | None] = [None] * len(items)

    def done(res: TaskResult) -> None:
        results[res.index] = res
        if on_result is not None:
            on_result(res)

    if workers == 0:
        for i, item in enumerate(items):
            start = time.monotonic()
            try:
                done(TaskResult(i, item, fn(item, shared), None, time.monotonic() - start))
            except Exception as exc:  # a failed task is reported, the sweep goes on
                done(TaskResult(i, item, None, _one_line(exc), time.monotonic() - start))
        return [r for r in results if r is not None]

    with ray_session(workers, address) as ray:
        from ray.exceptions import GetTimeoutError

        remote = ray.remote(max_retries=0)(fn)  # a crashed worker is reported, not silently retried
        shared_ref = ray.put(shared)
        start = time.monotonic()
        pending = {remote.remote(item, shared_ref): i for i, item in enumerate(items)}
        while pending:
            wait_s = None if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - start))
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
            if not ready:  # every remaining task is past the timeout
                for ref, i in pending.items():
                    ray.cancel(ref, force=True)
                    done(TaskResult(i, items[i], None, f"timed out after {timeout_s:g} s", time.monotonic() - start))
                break
            ref = ready[0]
            i = pending.pop(ref)
            try:
                value = ray.get(ref, timeout=60)
                done(TaskResult(i, items[i], value, None, time.monotonic() - start))
            except GetTimeoutError:
                done(TaskResult(i, items[i], None, "result not retrievable within 60 s", time.monotonic() - start))
            except Exception as exc:  # RayTaskError (the task raised), WorkerCrashedError, ...
                cause = getattr(exc, "cause", None)
                message = _one_line(cause) if isinstance(cause, BaseException) else _one_line(exc)
                if os.environ.get("DLPROC_DEBUG"):
                    traceback.print_exception(exc)
                done(TaskResult(i, items[i], None, message, time.monotonic() - start))
    return [r for r in results if r is not None]
