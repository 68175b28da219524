"""The dynamic batcher in-process: requests that skip the queue's order are taken safely."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rtvi.serving.batcher import DynamicBatcher


def test_a_request_behind_one_that_does_not_fit_joins_the_batch():
    """Found by the soak: taking a queued request that is not first in the queue compared
    it with the ones before it field by field, numpy inputs included; the comparison
    raised inside the batcher's task, which died, and every later request hung while
    health still said SERVING."""

    async def scenario() -> list[np.ndarray]:
        with ThreadPoolExecutor(1) as executor:
            batcher = DynamicBatcher(lambda kind, x: x[:, 0], executor, max_batch_size=16, max_queue_delay_s=0.05)
            requests = [np.full((rows, 3), i, np.float32) for i, rows in enumerate((2, 8, 10, 2))]
            calls = [asyncio.ensure_future(batcher.submit("images", x)) for x in requests]
            await asyncio.sleep(0)  # all queued before the first batch forms: 2 + 8, then 10 skipped, 2 taken
            batcher.start()
            try:
                return await asyncio.wait_for(asyncio.gather(*calls), 10)
            finally:
                await batcher.stop()

    results = asyncio.run(scenario())
    assert [list(r) for r in results] == [[0] * 2, [1] * 8, [2] * 10, [3] * 2]
