"""Requests that arrive together go to Triton together, where that pays.

Each Triton call costs the gateway CPU (Python gRPC in and out) and Triton's Python backend pays
per request too. So per variant at most `calls(variant)` Triton calls are in flight; a request
that arrives while they are busy waits, and when one returns, everything waiting (up to
`max_batch`) goes as one batched call, sent before the returned call's answers are handed over.
Nothing is held back on a timer: an idle gateway sends a lone request at once, and under load
batches form by themselves, as large as the load. The gateway caps the calls on a GPU only; on a
CPU Triton's own dynamic batcher does better (see `Colorizer.calls_for`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

# (variant, {input name: (B, ...) array}, timeout s or None) -> (B, ...) output
Call = Callable[[str, dict[str, np.ndarray], "float | None"], Awaitable[np.ndarray]]
UNCAPPED = 1 << 30  # calls(variant) for "no cap": each request is its own call, sent at once


@dataclass
class _Item:
    inputs: dict[str, np.ndarray]
    deadline: float | None  # loop time
    result: asyncio.Future


@dataclass
class _Lane:
    waiting: deque = field(default_factory=deque)
    calls: int = 0


class Batcher:
    def __init__(
        self,
        call: Call,
        calls: Callable[[str], int],
        max_batch: Callable[[str], int],
        on_batch: Callable[[str, int], None] = lambda variant, size: None,
    ):
        """`calls(variant)`: Triton calls in flight allowed for the variant now (it grows with the ready Tritons);
        `max_batch(variant)`: the model's largest batch; `on_batch(variant, size)`: told of each call."""
        self.call, self.calls, self.max_batch, self.on_batch = call, calls, max_batch, on_batch
        self.lanes: dict[str, _Lane] = {}
        self.tasks: set[asyncio.Task] = set()

    async def submit(self, variant: str, inputs: dict[str, np.ndarray], timeout: float | None) -> np.ndarray:
        """One request's inputs (no batch axis) -> its output (no batch axis)."""
        if self.calls(variant) >= UNCAPPED:  # no queue, no task of its own: ~0.05 CPU ms less per request
            self.on_batch(variant, 1)
            return (await self.call(variant, {name: x[None] for name, x in inputs.items()}, timeout))[0]
        loop = asyncio.get_running_loop()
        item = _Item(inputs, None if timeout is None else loop.time() + timeout, loop.create_future())
        lane = self.lanes.setdefault(variant, _Lane())
        lane.waiting.append(item)
        if lane.calls < max(1, self.calls(variant)):
            self._launch(variant, lane)
        # A caller that goes away cancels its future; the batch it sits in skips it or drops its row.
        return await item.result

    def _launch(self, variant: str, lane: _Lane) -> None:
        items, limit = [], max(1, self.max_batch(variant))
        while lane.waiting and len(items) < limit:
            item = lane.waiting.popleft()
            if not item.result.done():  # cancelled while it waited
                items.append(item)
        if not items:
            return
        lane.calls += 1
        task = asyncio.get_running_loop().create_task(self._run(variant, lane, items))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, variant: str, lane: _Lane, items: list[_Item]) -> None:
        out: np.ndarray | None = None
        error: Exception | None = None
        try:
            deadlines = [i.deadline for i in items]
            # The call may take as long as the most patient caller allows; each caller's own deadline
            # still ends its wait (grpc cancels the handler), so no one waits past theirs.
            timeout = None if None in deadlines else max(0.001, max(deadlines) - asyncio.get_running_loop().time())
            batch = {name: np.stack([i.inputs[name] for i in items]) for name in items[0].inputs}
            self.on_batch(variant, len(items))
            out = await self.call(variant, batch, timeout)
        except asyncio.CancelledError:  # the gateway is stopping: no caller may wait forever
            self._cancel(items)
            raise
        except Exception as e:  # every caller in the batch gets the error
            error = e
        finally:
            lane.calls -= 1
            if lane.waiting:
                self._launch(variant, lane)
        try:
            # The next call leaves before this one's answers are handed over: its task runs first and
            # queues grpc's send ahead of the callers, whose image work would otherwise keep Triton
            # idle (with one call in flight per Triton, the default on a CPU).
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self._cancel(items)
            raise
        for k, i in enumerate(items):
            if i.result.done():  # its caller went away
                continue
            if error is None:
                i.result.set_result(out[k])
            else:
                i.result.set_exception(error)

    @staticmethod
    def _cancel(items: list[_Item]) -> None:
        for i in items:
            i.result.cancel()
