"""service.batcher: requests that arrive while Triton is busy go together, none waits on a timer,
none is lost (a scripted call function stands in for Triton here; tests/test_gateway.py runs the
batcher against the real one)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.batcher import UNCAPPED, Batcher


class Script:
    """A call function that records each batch and answers row i with input row i + 1 when released."""

    def __init__(self, fail: Exception | None = None):
        self.batches: list[np.ndarray] = []
        self.release = asyncio.Event()
        self.fail = fail
        self.timeouts: list[float | None] = []

    async def __call__(self, variant, batch, timeout):
        self.batches.append(batch["x"])
        self.timeouts.append(timeout)
        await self.release.wait()
        if self.fail:
            raise self.fail
        return batch["x"] + 1


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def batcher_for(script: Script, calls: int = 1, max_batch: int = 8) -> Batcher:
    return Batcher(script, calls=lambda variant: calls, max_batch=lambda variant: max_batch)


def item(i: int) -> dict[str, np.ndarray]:
    return {"x": np.full((2, 2), i, np.int64)}


def test_an_idle_batcher_sends_a_lone_request_at_once():
    async def main():
        script = Script()
        batcher = batcher_for(script)
        task = asyncio.create_task(batcher.submit("m", item(5), None))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert [b.shape[0] for b in script.batches] == [1]  # sent before anything was released
        script.release.set()
        return await task

    assert (run(main()) == 6).all()


def test_uncapped_every_request_is_its_own_call_sent_at_once_and_counted_as_a_batch_of_one():
    async def main():
        script, sizes = Script(), []
        batcher = Batcher(
            script,
            calls=lambda variant: UNCAPPED,
            max_batch=lambda variant: 8,
            on_batch=lambda variant, size: sizes.append(size),
        )
        tasks = [asyncio.create_task(batcher.submit("m", item(i), 2.0)) for i in range(5)]
        await asyncio.sleep(0)
        assert [b.shape[0] for b in script.batches] == [1] * 5  # all in flight, none waited for another
        assert script.timeouts == [2.0] * 5 and sizes == [1] * 5 and not batcher.tasks
        script.release.set()
        return await asyncio.gather(*tasks)

    assert [int(r[0, 0]) for r in run(main())] == [1, 2, 3, 4, 5]


def test_requests_that_wait_on_a_busy_call_go_as_one_batch_in_order_and_get_their_own_rows():
    async def main():
        script = Script()
        batcher = batcher_for(script)
        tasks = [asyncio.create_task(batcher.submit("m", item(i), None)) for i in range(6)]
        await asyncio.sleep(0.01)
        assert [len(b) for b in script.batches] == [1]  # one call in flight; five wait
        script.release.set()
        results = await asyncio.gather(*tasks)
        return script, results

    script, results = run(main())
    assert [len(b) for b in script.batches] == [1, 5]
    assert [b[:, 0, 0].tolist() for b in script.batches] == [[0], [1, 2, 3, 4, 5]]
    assert [int(r[0, 0]) for r in results] == [1, 2, 3, 4, 5, 6]


def test_a_batch_never_exceeds_the_models_max_batch_and_lanes_are_per_variant():
    async def main():
        script = Script()
        batcher = batcher_for(script, calls=1, max_batch=3)
        tasks = [asyncio.create_task(batcher.submit(v, item(i), None)) for i in range(8) for v in ("a", "b")]
        await asyncio.sleep(0.01)
        script.release.set()
        await asyncio.gather(*tasks)
        return script

    sizes = [len(b) for b in run(main()).batches]
    assert max(sizes) == 3 and sum(sizes) == 16
    assert sizes[:2] == [1, 1]  # each variant's first request went at once, on its own lane


def test_calls_in_flight_follow_the_callable():
    async def main():
        script = Script()
        batcher = batcher_for(script, calls=3, max_batch=8)
        tasks = [asyncio.create_task(batcher.submit("m", item(i), None)) for i in range(5)]
        await asyncio.sleep(0.01)
        in_flight = [len(b) for b in script.batches]
        script.release.set()
        await asyncio.gather(*tasks)
        return in_flight

    assert run(main()) == [1, 1, 1]


def test_an_error_reaches_every_request_of_the_batch_and_the_next_batch_still_runs():
    async def main():
        script = Script(fail=RuntimeError("triton down"))
        batcher = batcher_for(script)
        tasks = [asyncio.create_task(batcher.submit("m", item(i), None)) for i in range(4)]
        await asyncio.sleep(0.01)
        script.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        script.fail = None
        after = await batcher.submit("m", item(9), None)
        return results, after

    results, after = run(main())
    assert all(isinstance(r, RuntimeError) and "triton down" in str(r) for r in results)
    assert (after == 10).all()


def test_a_caller_that_goes_away_while_waiting_is_left_out_and_the_others_are_answered():
    async def main():
        script = Script()
        batcher = batcher_for(script)
        first = asyncio.create_task(batcher.submit("m", item(0), None))
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(batcher.submit("m", item(i), None)) for i in (1, 2, 3)]
        await asyncio.sleep(0.01)
        waiting[1].cancel()
        await asyncio.sleep(0)
        script.release.set()
        return script, await first, await waiting[0], await waiting[2], waiting[1]

    script, r0, r1, r3, gone = run(main())
    assert [b[:, 0, 0].tolist() for b in script.batches] == [[0], [1, 3]]
    assert (int(r0[0, 0]), int(r1[0, 0]), int(r3[0, 0])) == (1, 2, 4)
    assert gone.cancelled()


def test_the_call_gets_the_most_patient_callers_deadline_or_none():
    async def main():
        script = Script()
        script.release.set()
        batcher = batcher_for(script)
        busy = asyncio.create_task(batcher.submit("m", item(0), 5.0))
        tasks = [asyncio.create_task(batcher.submit("m", item(i), t)) for i, t in ((1, 2.0), (2, 9.0))]
        await asyncio.gather(busy, *tasks)
        await batcher.submit("m", item(3), None)
        return script.timeouts

    first, second, third = run(main())
    assert first == pytest.approx(5.0, abs=0.5) and second == pytest.approx(9.0, abs=0.5) and third is None


def test_a_batch_cancelled_in_flight_cancels_its_callers_instead_of_leaving_them_waiting():
    async def main():
        script = Script()
        batcher = batcher_for(script)
        task = asyncio.create_task(batcher.submit("m", item(0), None))
        await asyncio.sleep(0.01)
        for t in list(batcher.tasks):
            t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())


def test_the_next_batch_is_sent_before_the_finished_batchs_callers_resume():
    """With one call in flight, Triton idles from the end of one call to the start of the next: the
    callers' image work (PNG encoding) must not run in between."""

    async def main():
        script = Script()
        batcher = batcher_for(script, calls=1)
        seen_by_first = []

        async def first():
            await batcher.submit("m", item(0), None)
            seen_by_first.append(len(script.batches))  # calls started when its answer arrived

        tasks = [asyncio.create_task(first())]
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(batcher.submit("m", item(i), None)) for i in (1, 2)]
        await asyncio.sleep(0)
        assert [b.shape[0] for b in script.batches] == [1]  # 1 and 2 wait for the busy call
        script.release.set()
        await asyncio.gather(*tasks)
        return seen_by_first

    assert run(main()) == [2]


def test_calls_in_flight_default_to_no_cap_on_a_cpu_and_two_per_gpu_instance_per_ready_triton():
    from types import SimpleNamespace

    from contract.hints import HintKind
    from contract.wire import instances
    from service import gateway
    from service.settings import GatewayConfig
    from service.variants import VariantInfo

    assert instances({}) == (1, False)
    assert instances({"instance_group": [{"kind": "KIND_CPU", "count": 2}]}) == (2, False)
    assert instances({"instance_group": [{"kind": "KIND_GPU", "count": 2, "gpus": [0, 1]}]}) == (4, True)

    def calls(config: GatewayConfig, ready: int, **variant) -> int:
        c = gateway.Colorizer(config)
        c.pool.shutdown()
        c.state.variants = {"v": VariantInfo("v", HintKind.NONE, "", "1", **variant)}
        c.triton = SimpleNamespace(ready_count=ready)
        return c.calls_for("v")

    assert calls(GatewayConfig(), 1) == UNCAPPED  # every request goes at once
    assert calls(GatewayConfig(), 3, gpu=True, instances=2) == 12
    assert calls(GatewayConfig(), 2, gpu=True) == 4
    assert calls(GatewayConfig(triton_calls=3), 2) == 6  # the setting wins
