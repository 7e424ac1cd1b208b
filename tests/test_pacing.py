"""Shared platform limits: the scheduler's order, pledges and admission, and how answers use them."""

from __future__ import annotations

import asyncio

import pytest

from core.pacing import Call, Scheduler
from core.ratelimit import TokenBucket, WindowBudget
from core.streaming import RESCUED, StreamingReply
from core.target import TargetLimits
from tests.fakes.target import RecordingTarget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# --- the scheduler ----------------------------------------------------------------------------------


async def test_calls_wait_in_order_of_urgency_then_arrival() -> None:
    limit = WindowBudget(1, 0.05)
    scheduler = Scheduler()
    await scheduler.call(Call.POST, (limit,))  # spends the window
    order: list[str] = []

    async def call(name: str, urgency: Call) -> None:
        await scheduler.call(urgency, (limit,))
        order.append(name)

    tasks = [
        asyncio.create_task(call("post a", Call.POST)),
        asyncio.create_task(call("post b", Call.POST)),
        asyncio.create_task(call("final", Call.FINAL)),
    ]
    await asyncio.wait_for(asyncio.gather(*tasks), 2)
    assert order == ["final", "post a", "post b"]


async def test_a_queued_post_that_becomes_final_moves_to_the_front() -> None:
    limit = WindowBudget(1, 0.05)
    scheduler = Scheduler()
    await scheduler.call(Call.POST, (limit,))
    done = False
    order: list[str] = []

    async def call(name: str, urgency: Call | object) -> None:
        await scheduler.call(urgency, (limit,))  # type: ignore[arg-type]
        order.append(name)

    first = asyncio.create_task(call("earlier post", Call.POST))
    upgraded = asyncio.create_task(call("completed answer", lambda: Call.FINAL if done else Call.POST))
    await settle()
    done = True
    await asyncio.wait_for(asyncio.gather(first, upgraded), 2)
    assert order == ["completed answer", "earlier post"]


async def test_droppable_calls_give_way_to_queued_ones_and_to_pledged_finals() -> None:
    clock = Clock()
    limit = TokenBucket(3, 1.0, clock=clock)
    scheduler = Scheduler(clock)
    assert scheduler.admits((limit,), within=0)
    scheduler.pledge((limit,))
    scheduler.pledge((limit,))
    # Three calls available, two pledged to finals: one intermediate edit may go, then none.
    assert scheduler.try_call(Call.EDIT, (limit,))
    assert not scheduler.try_call(Call.EDIT, (limit,))
    assert not scheduler.try_call(Call.TYPING, (limit,))
    assert not scheduler.admits((limit,), within=0), "a third final could not be promised"
    # The finals themselves are owed nothing.
    await scheduler.call(Call.FINAL, (limit,))
    await scheduler.call(Call.FINAL, (limit,))
    scheduler.release((limit,))
    scheduler.release((limit,))
    assert scheduler.pledged(limit) == 0
    clock.now += 1.0
    assert scheduler.try_call(Call.EDIT, (limit,))


async def test_nothing_droppable_goes_while_a_call_waits_on_the_same_limit() -> None:
    limit = WindowBudget(1, 0.1)
    other = WindowBudget(5, 0.1)
    scheduler = Scheduler()
    await scheduler.call(Call.POST, (limit,))
    waiting = asyncio.create_task(scheduler.call(Call.FINAL, (limit,)))
    await settle()
    assert not scheduler.try_call(Call.TYPING, (limit,))
    assert scheduler.try_call(Call.TYPING, (other,)), "another limit is not held up"
    await asyncio.wait_for(waiting, 2)


async def test_a_cancelled_wait_gives_up_its_place() -> None:
    limit = WindowBudget(1, 0.05)
    scheduler = Scheduler()
    await scheduler.call(Call.POST, (limit,))
    abandoned = asyncio.create_task(scheduler.call(Call.FINAL, (limit,)))
    await settle()
    abandoned.cancel()
    await asyncio.gather(abandoned, return_exceptions=True)
    await asyncio.wait_for(scheduler.call(Call.POST, (limit,)), 2)
    assert scheduler.delay(Call.EDIT, (limit,)) < 1.0, "no stale ticket holds the limit"


async def test_a_call_waits_for_every_limit_it_draws_on() -> None:
    shared = WindowBudget(2, 0.2)
    channel_a, channel_b = WindowBudget(1, 0.2), WindowBudget(1, 0.2)
    scheduler = Scheduler()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await scheduler.call(Call.POST, (shared, channel_a))
    await scheduler.call(Call.POST, (shared, channel_b))
    # Both channels are free again only after their windows; the shared limit too.
    await asyncio.wait_for(scheduler.call(Call.POST, (shared, channel_a)), 2)
    assert loop.time() - started >= 0.15


# --- answers on shared limits -----------------------------------------------------------------------


def limits(edits: TokenBucket | WindowBudget, scheduler: Scheduler) -> TargetLimits:
    return TargetLimits(
        max_chars=2000,
        edit_burst=5,
        edit_window=0.2,
        typing_interval=0.02,
        edits=(edits,),
        scheduler=scheduler,
    )


async def test_an_answer_whose_final_edit_cannot_be_promised_is_held_and_posted_once() -> None:
    clock = Clock()
    workspace = TokenBucket(1, 0.001, clock=clock)  # one update, refilled after a long while
    scheduler = Scheduler(clock)
    first, second = (
        RecordingTarget(limits(workspace, scheduler)),
        RecordingTarget(limits(workspace, scheduler)),
    )
    streamed, held = StreamingReply(first), StreamingReply(second)
    for reply in (streamed, held):
        reply.start_typing()
        reply.update("Hello")
    await asyncio.sleep(0.1)
    assert not streamed.held and first.kinds("post"), "the first answer streams: its final is pledged"
    assert held.held and not second.kinds("post"), "the second waits to be posted once"
    assert len(second.kinds("typing")) >= 2, "and keeps its sign of life meanwhile"
    await held.finish("Hello, world")
    await streamed.finish("Hello there")
    assert second.kinds("post")[0].text == "Hello, world" and not second.kinds("edit")
    assert first.messages == {"m1": "Hello there"}, "the pledged final edit went out at once"
    assert scheduler.pledged(workspace) == 0


async def test_pledged_finals_are_not_spent_on_intermediate_edits() -> None:
    clock = Clock()
    workspace = TokenBucket(2, 0.001, clock=clock)
    scheduler = Scheduler(clock)
    targets = [RecordingTarget(limits(workspace, scheduler)) for _ in range(2)]
    replies = [StreamingReply(t) for t in targets]
    for reply in replies:
        reply.update("a")
    await asyncio.sleep(0.05)
    for step in range(10):
        for reply in replies:
            reply.update("a" + "b" * (step + 1))
        await asyncio.sleep(0.02)
    assert not any(t.kinds("edit") for t in targets), "two calls, two pledged finals: no intermediate edit"
    await asyncio.gather(*(r.finish("final") for r in replies))
    assert [t.messages["m1"] for t in targets] == ["final", "final"]


async def test_a_final_edit_that_never_goes_through_is_posted_anew() -> None:
    target = RecordingTarget(
        TargetLimits(max_chars=2000, edit_burst=5, edit_window=0.2), rate_limit_edits=1000, retry_after=0.05
    )
    reply = StreamingReply(target, finish_timeout=0.5)
    reply.update("The beginning")
    await asyncio.sleep(0.05)
    await reply.finish("The beginning and the end.")
    last = target.kinds("post")[-1].text
    assert last == f"{RESCUED}\n\nThe beginning and the end."
    assert target.notices == []


@pytest.mark.parametrize("interval", [None, 0.02])
async def test_typing_that_finds_no_room_is_tried_again_until_the_first_text(interval: float | None) -> None:
    shared = WindowBudget(1, 0.15)
    scheduler = Scheduler()
    assert scheduler.try_call(Call.TYPING, (shared,))  # someone else's typing took the window
    target = RecordingTarget(
        TargetLimits(max_chars=2000, typing_interval=interval, typing_limits=(shared,), scheduler=scheduler)
    )
    reply = StreamingReply(target)
    reply.start_typing()
    await asyncio.sleep(0.05)
    assert not target.kinds("typing")
    await asyncio.sleep(1.2)
    assert target.kinds("typing"), "typing went out once there was room"
    await reply.finish("done")
