"""Continuous batching for async callers: concurrent calls are gathered into one batch whenever capacity frees up.

    batcher = ContinuousBatcher(run_batch, max_batch_size=32, max_in_flight=1, size=len)
    result = await batcher.submit(item)      # from many coroutines at once

A call that finds a free slot starts at once (no fixed wait: a lone request pays nothing); calls that arrive while
`max_in_flight` batches run queue up, and the next free slot takes all of them, up to `max_batch_size` (in units of
`size`; a single larger item still goes, alone). Under load, batches grow to what arrived during one batch's run,
so batch size follows the load by itself. Serve's `@serve.batch` instead waits up to `batch_wait_timeout_s` for
every batch (a fixed wait longer than the onnxruntime encoder takes for one text), and forms batches while
earlier ones still hold its concurrency permit, so batches formed then stay small. README, Performance, has what
this changed in throughput and latency.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class ContinuousBatcher(Generic[Item, Result]):
    def __init__(
        self,
        run_batch: Callable[[list[Item]], Awaitable[list[Result]]],
        max_batch_size: int,
        max_in_flight: int = 1,
        size: Callable[[Item], int] = lambda item: 1,
    ):
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_in_flight = max_in_flight
        self.size = size
        self._queue: deque[tuple[Item, asyncio.Future]] = deque()
        self._running: set[asyncio.Task] = set()

    def configure(self, max_batch_size: int) -> None:
        """A new batch size limit (a replica's reconfigured `user_config`), used from the next batch on."""
        self.max_batch_size = max_batch_size

    async def submit(self, item: Item) -> Result:
        """`item`'s result, computed in a batch with whatever other items are queued when a slot frees."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._start_batches()
        return await future  # a cancelled caller (timeout) only drops its own result

    def _start_batches(self) -> None:
        while self._queue and len(self._running) < self.max_in_flight:
            batch = [self._queue.popleft()]
            total = self.size(batch[0][0])
            while self._queue and total + self.size(self._queue[0][0]) <= self.max_batch_size:
                item = self._queue.popleft()
                batch.append(item)
                total += self.size(item[0])
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)

    async def _run(self, batch: list[tuple[Item, asyncio.Future]]) -> None:
        try:
            live = [(item, future) for item, future in batch if not future.done()]  # drop callers gone meanwhile
            if live:
                results = await self.run_batch([item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(live)} items")
                for (_, future), result in zip(live, results):
                    if not future.done():
                        future.set_result(result)
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets the error, whatever it is
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        except BaseException:  # cancelled (replica shutting down): so are its callers
            for _, future in batch:
                future.cancel()
            raise
        finally:
            self._running.discard(asyncio.current_task())
            self._start_batches()
