"""collector.BurstPacer: the collector's young threshold raised during a burst of connects only."""

from __future__ import annotations

import asyncio
import gc

from quart_chat.collector import BURST_CONNECTS, BURST_THRESHOLD, BurstPacer


async def test_a_burst_raises_the_threshold_and_a_quiet_second_puts_it_back():
    before = gc.get_threshold()
    try:
        pacer = BurstPacer()
        for _ in range(BURST_CONNECTS - 1):
            pacer.connected()
        assert gc.get_threshold() == before  # a few connects are no burst
        pacer.connected()
        assert gc.get_threshold() == (BURST_THRESHOLD, *before[1:])
        for _ in range(3 * BURST_CONNECTS):  # the burst goes on past the first second
            pacer.connected()
            await asyncio.sleep(0.02)
        assert gc.get_threshold()[0] == BURST_THRESHOLD
        await asyncio.sleep(2.3)  # a quiet second, and its check
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)
