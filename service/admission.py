"""How much image work the gateway takes on at once, by decoded pixels rather than by request.

A request's memory grows with its pixels, not with its bytes: a 12 kB 1-bit PNG decodes to 40
megapixels. The gateway counts every large request's pixels (as its headers say, before any is
decoded) against a budget while it decodes, waits for Triton and encodes its answer; a request
that does not fit waits its turn. The budget, the per-pixel cost and the ceiling they set are
stated in the README ("Limits and memory").
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
from collections import deque

log = logging.getLogger("sketch2color.admission")
# What one pixel in flight costs the gateway at its peak (decoded sketch, the answer at the
# sketch's size, its encoding): the memory ceiling is the baseline plus this times the budget.
# Measured in results/reliability/report.md, with a margin.
BYTES_PER_PIXEL = 12


class PixelBudget:
    """A weighted semaphore on pixels, first come first served (a large request is not starved by
    a stream of smaller ones)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"a pixel budget needs a positive capacity, not {capacity}")
        self.capacity = capacity
        self.used = 0
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int):
        pixels = min(pixels, self.capacity)  # one request over the budget runs alone
        if self._waiting or self.used + pixels > self.capacity:
            turn = asyncio.get_running_loop().create_future()
            self._waiting.append((pixels, turn))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():  # given its turn as it was cancelled: hand it on
                    self._release(pixels)
                else:
                    self._waiting.remove((pixels, turn))
                    self._wake()  # it may have blocked the ones behind it
                raise
        else:
            self.used += pixels
        try:
            yield
        finally:
            self._release(pixels)

    def _release(self, pixels: int) -> None:
        self.used -= pixels
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self.used + self._waiting[0][0] <= self.capacity:
            pixels, turn = self._waiting.popleft()
            self.used += pixels
            turn.set_result(None)


class Allocator:
    """glibc's allocator, told to give large blocks back to the system.

    By default glibc raises its mmap threshold each time a large block is freed (up to 32 MB), so
    the next decode's arrays come from the heap, and a heap fragmented by a burst of decodes stays
    resident: the gateway's RSS stayed at several times its baseline after one. A fixed threshold
    puts every block of 1 MB or more in its own mapping, returned when freed; `trim` after a large
    request returns what the heaps hold free."""

    M_MMAP_THRESHOLD = -3  # mallopt's parameter numbers, from malloc.h
    THRESHOLD = 1 << 20

    def __init__(self):
        name = ctypes.util.find_library("c")
        self.libc = None
        try:
            libc = ctypes.CDLL(name)
            if libc.mallopt(self.M_MMAP_THRESHOLD, self.THRESHOLD) == 1:  # 1: done; musl and others lack it
                self.libc = libc
        except (OSError, AttributeError, TypeError):
            pass
        if self.libc is None:
            log.debug("not glibc: large blocks stay with the allocator's own policy")

    def trim(self) -> None:
        if self.libc is not None:
            self.libc.malloc_trim(0)
