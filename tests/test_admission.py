"""service.admission: the pixel budget admits large requests in order and never past its capacity;
settings that could never admit the largest sketch are refused at start-up."""

from __future__ import annotations

import asyncio

import pytest

from service.admission import Allocator, PixelBudget
from service.settings import GatewayConfig, config_from_args


def test_the_budget_admits_in_arrival_order_and_never_holds_more_than_its_capacity():
    async def main():
        budget, order, peak = PixelBudget(100), [], [0]

        async def request(name: str, pixels: int, work_s: float):
            async with budget.hold(pixels):
                order.append(name)
                peak[0] = max(peak[0], budget.used)
                await asyncio.sleep(work_s)

        tasks = [asyncio.create_task(request("a", 60, 0.05))]
        await asyncio.sleep(0)
        # b does not fit beside a; c would, but must not overtake b (a large request is never starved)
        tasks += [asyncio.create_task(request("b", 70, 0.01)), asyncio.create_task(request("c", 30, 0.01))]
        await asyncio.gather(*tasks)
        return order, peak[0], budget.used

    order, peak, left = asyncio.run(main())
    assert order == ["a", "b", "c"]
    assert peak <= 100 and left == 0


def test_a_request_cancelled_while_it_waits_gives_its_turn_to_the_next():
    async def main():
        budget = PixelBudget(100)
        first_done = asyncio.Event()

        async def hold(pixels: int, until: asyncio.Event | None = None):
            async with budget.hold(pixels):
                if until is not None:
                    await until.wait()

        a = asyncio.create_task(hold(80, first_done))
        await asyncio.sleep(0)
        b = asyncio.create_task(hold(90))  # waits behind a
        c = asyncio.create_task(hold(20))  # would fit beside a, but waits behind b
        await asyncio.sleep(0.01)
        b.cancel()
        await asyncio.wait_for(c, 1)  # b gone: c fits beside a at once
        first_done.set()
        await a
        with pytest.raises(asyncio.CancelledError):
            await b
        return budget.used

    assert asyncio.run(main()) == 0


def test_one_request_larger_than_the_budget_still_runs_alone():
    async def main():
        budget = PixelBudget(10)
        async with budget.hold(50):
            return budget.used

    assert asyncio.run(main()) == 10


def test_settings_that_could_never_admit_the_largest_sketch_are_refused_at_start_up(capsys):
    with pytest.raises(SystemExit):
        config_from_args(["--max-pixels", "40000000", "--max-pixels-in-flight", "1000000"])
    assert "below --max-pixels" in capsys.readouterr().err
    assert GatewayConfig().pixels_in_flight == 2 * GatewayConfig().max_pixels
    with pytest.raises(ValueError, match="go together"):
        GatewayConfig(tls_cert="server.pem")


def test_the_allocator_is_told_to_return_large_blocks_on_this_machine():
    allocator = Allocator()
    assert allocator.libc is not None  # glibc, as on the machines the gateway is tested and deployed on
    allocator.trim()
