"""ContinuousBatcher: pure asyncio logic, no Ray."""

from __future__ import annotations

import asyncio

import pytest

from deployments.batcher import ContinuousBatcher


class Recorder:
    """A `run_batch` that records its batches. With a `gate`, every batch waits until the gate opens (so a test
    decides when the running batch ends, whatever the machine's speed); without, each runs for `delay` seconds."""

    def __init__(self, delay: float = 0.05, fail_on: str | None = None, gate: asyncio.Event | None = None):
        self.batches: list[list[str]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.gate = gate
        self.running = 0
        self.most_running = 0

    async def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await (self.gate.wait() if self.gate else asyncio.sleep(self.delay))
            if self.fail_on in items:
                raise ValueError(f"bad item {self.fail_on}")
            return [item.upper() for item in items]
        finally:
            self.running -= 1

    async def until_running(self) -> None:
        """Return once a batch has started (yielding to the event loop, no timer)."""
        while not self.running:
            await asyncio.sleep(0)


def run(coro):
    return asyncio.run(coro)


def test_a_lone_call_runs_at_once():
    async def main():
        recorder = Recorder(delay=0)
        batcher = ContinuousBatcher(recorder, max_batch_size=8)
        call = asyncio.ensure_future(batcher.submit("a"))
        # The event loop fires timers in deadline order: a batcher that waited for one (a batching window of over
        # 1 ms) would not have started its batch when this sleep ends, however slow the machine.
        await asyncio.sleep(0.001)
        started = list(recorder.batches)
        return started, await call

    started, result = run(main())
    assert started == [["a"]] and result == "A"  # no batching wait


def test_calls_arriving_during_a_batch_form_the_next_one_up_to_the_limit():
    async def main():
        recorder = Recorder(gate=asyncio.Event())
        batcher = ContinuousBatcher(recorder, max_batch_size=3)
        first = asyncio.ensure_future(batcher.submit("a"))
        await recorder.until_running()  # "a" runs until the gate opens
        rest = [asyncio.ensure_future(batcher.submit(x)) for x in "bcdef"]
        await asyncio.sleep(0)  # they queue
        recorder.gate.set()
        results = await asyncio.gather(first, *rest)
        return results, recorder

    results, recorder = run(main())
    assert results == list("ABCDEF")  # every caller gets its own result
    assert recorder.batches == [["a"], ["b", "c", "d"], ["e", "f"]]
    assert recorder.most_running == 1


def test_sizes_bound_a_batch_and_an_oversized_item_goes_alone():
    async def main():
        recorder = Recorder(delay=0.01)
        batcher = ContinuousBatcher(recorder, max_batch_size=4, size=len)
        blocker = asyncio.ensure_future(batcher.submit("x"))
        await asyncio.sleep(0)
        calls = [asyncio.ensure_future(batcher.submit(x)) for x in ("aa", "bb", "c", "dddddd", "e")]
        await asyncio.gather(blocker, *calls)
        return recorder.batches

    assert run(main()) == [["x"], ["aa", "bb"], ["c"], ["dddddd"], ["e"]]


def test_batches_run_concurrently_up_to_max_in_flight():
    async def main():
        recorder = Recorder()
        batcher = ContinuousBatcher(recorder, max_batch_size=1, max_in_flight=2)
        await asyncio.gather(*(batcher.submit(x) for x in "abcd"))
        return recorder.most_running

    assert run(main()) == 2


def test_an_error_reaches_the_callers_of_its_batch_only():
    async def main():
        recorder = Recorder(fail_on="b", gate=asyncio.Event())
        batcher = ContinuousBatcher(recorder, max_batch_size=2)
        first = asyncio.ensure_future(batcher.submit("a"))
        await recorder.until_running()
        calls = [asyncio.ensure_future(batcher.submit(x)) for x in "bcd"]
        await asyncio.sleep(0)  # they queue: ["b", "c"] and ["d"]
        recorder.gate.set()
        results = await asyncio.gather(first, *calls, return_exceptions=True)
        return results, await batcher.submit("e")

    results, after = run(main())
    assert results[0] == "A" and results[3] == "D"
    assert all(isinstance(r, ValueError) for r in results[1:3])
    assert after == "E"  # the batcher goes on serving


def test_a_cancelled_caller_does_not_disturb_the_others():
    async def main():
        recorder = Recorder(gate=asyncio.Event())
        batcher = ContinuousBatcher(recorder, max_batch_size=4)
        first = asyncio.ensure_future(batcher.submit("a"))
        await recorder.until_running()
        leaving = asyncio.ensure_future(batcher.submit("b"))
        staying = asyncio.ensure_future(batcher.submit("c"))
        await asyncio.sleep(0)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        recorder.gate.set()
        return await asyncio.gather(first, staying), recorder.batches

    results, batches = run(main())
    assert results == ["A", "C"] and batches == [["a"], ["c"]]  # "b" left before its batch ran
