"""Small helpers shared by the test files (imported as ``helpers``; the tests directory is on ``sys.path``)."""

from __future__ import annotations

import zlib


def stable_seed(*parts: object) -> int:
    """A 32-bit seed from the text of ``parts``, the same in every process (``hash()`` of a string is salted)."""
    return zlib.crc32(repr(parts).encode())


async def transfer(ctx, interface) -> None:
    """Hold ``valid`` (already set with the payload) until the clock edge at which ``ready`` is high.

    A plain loop instead of ``ctx.tick().until(...)``: a background testbench suspended inside ``until`` makes
    pytest report an internal error when another testbench fails.
    """
    while True:
        _, _, ready = await ctx.tick().sample(interface.ready)
        if ready:
            return
