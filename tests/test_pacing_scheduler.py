"""Shared platform limits: the scheduler's order, pledges and admission, and how answers use them."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from acechat.core.answer import AnswerView
from acechat.core.events import ToolStarted
from acechat.core.pacing.limits import InFlightBucket, TokenBucket
from acechat.core.pacing.scheduler import Place, Scheduler, Urgency
from acechat.core.reply_target import TargetLimits
from acechat.core.sanitize import ThinkingMode
from acechat.core.streaming import FAILED_TRIES, RESCUED, StreamingReply
from acechat.core.upstream import AnswerText
from tests.fakes.target import TEST_RULES, RecordingTarget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def until(condition: Callable[[], object]) -> None:
    """Wait for what the recording target recorded, however busy the machine is: it announces nothing,
    so this polls every 10 ms."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def made_at_once(call: Coroutine[Any, Any, None]) -> bool:
    """Whether a scheduler call returns without suspending: no queue, no timer, no other task first."""
    try:
        call.send(None)
    except StopIteration:
        return True
    call.close()
    return False


class CountingBucket(TokenBucket):
    """A token bucket that counts how often the scheduler asks how long to wait."""

    def __init__(self, capacity: float, rate: float, clock: Clock) -> None:
        super().__init__(capacity, rate, clock=clock)
        self.delays = 0

    def delay(self, reserve: int = 0) -> float:
        self.delays += 1
        return super().delay(reserve)


# --- the scheduler ----------------------------------------------------------------------------------


async def next_window(clock: Clock, scheduler: Scheduler, seconds: float = 1.0) -> None:
    """Let `seconds` pass on the limits' clock, and the scheduler look at its queue at once."""
    clock.now += seconds
    scheduler.done(())
    await settle()


async def test_calls_wait_in_order_of_urgency_then_arrival() -> None:
    clock = Clock()
    limit = TokenBucket(1, 1.0, clock=clock)
    scheduler = Scheduler()
    await scheduler.call(Urgency.POST, (limit,))  # spends the window
    order: list[str] = []

    async def call(name: str, urgency: Urgency) -> None:
        await scheduler.call(urgency, (limit,))
        order.append(name)

    tasks = [
        asyncio.create_task(call("post a", Urgency.POST)),
        asyncio.create_task(call("post b", Urgency.POST)),
        asyncio.create_task(call("final", Urgency.FINAL)),
    ]
    await settle()
    assert order == []
    for served in (["final"], ["final", "post a"], ["final", "post a", "post b"]):
        await next_window(clock, scheduler)
        assert order == served
    await asyncio.gather(*tasks)


async def test_a_queued_post_that_becomes_final_moves_to_the_front() -> None:
    clock = Clock()
    limit = TokenBucket(1, 1.0, clock=clock)
    scheduler = Scheduler()
    await scheduler.call(Urgency.POST, (limit,))
    done = False
    order: list[str] = []

    async def call(name: str, urgency: Urgency | object) -> None:
        await scheduler.call(urgency, (limit,))  # type: ignore[arg-type]
        order.append(name)

    first = asyncio.create_task(call("earlier post", Urgency.POST))
    upgraded = asyncio.create_task(call("completed answer", lambda: Urgency.FINAL if done else Urgency.POST))
    await settle()
    done = True
    await next_window(clock, scheduler)
    assert order == ["completed answer"]
    await next_window(clock, scheduler)
    assert order == ["completed answer", "earlier post"]
    await asyncio.gather(first, upgraded)


async def test_droppable_calls_give_way_to_queued_ones_and_to_pledged_finals() -> None:
    clock = Clock()
    limit = TokenBucket(3, 1.0, clock=clock)
    scheduler = Scheduler()
    assert scheduler.admits((limit,), within=0)
    scheduler.pledge((limit,))
    scheduler.pledge((limit,))
    # Three calls available, two pledged to finals: one intermediate edit may go, then none.
    assert scheduler.try_call(Urgency.EDIT, (limit,))
    assert not scheduler.try_call(Urgency.EDIT, (limit,))
    assert not scheduler.try_call(Urgency.TYPING, (limit,))
    assert not scheduler.admits((limit,), within=0), "a third final could not be promised"
    # The finals themselves are owed nothing.
    await scheduler.call(Urgency.FINAL, (limit,))
    await scheduler.call(Urgency.FINAL, (limit,))
    scheduler.release((limit,))
    scheduler.release((limit,))
    assert scheduler.pledged(limit) == 0
    clock.now += 1.0
    assert scheduler.try_call(Urgency.EDIT, (limit,))


async def test_nothing_droppable_goes_while_a_call_waits_on_the_same_limit() -> None:
    limit = TokenBucket(1, 10.0)
    other = TokenBucket(5, 50.0)
    scheduler = Scheduler()
    await scheduler.call(Urgency.POST, (limit,))
    waiting = asyncio.create_task(scheduler.call(Urgency.FINAL, (limit,)))
    await settle()
    assert not scheduler.try_call(Urgency.TYPING, (limit,))
    assert scheduler.try_call(Urgency.TYPING, (other,)), "another limit is not held up"
    await asyncio.wait_for(waiting, 2)


async def test_a_cancelled_wait_gives_up_its_place() -> None:
    clock = Clock()
    limit = TokenBucket(1, 1.0, clock=clock)
    scheduler = Scheduler()
    assert limit.try_acquire()
    abandoned = asyncio.create_task(scheduler.call(Urgency.FINAL, (limit,)))
    kept = asyncio.create_task(scheduler.call(Urgency.POST, (limit,)))
    await settle()
    abandoned.cancel()
    await asyncio.gather(abandoned, return_exceptions=True)
    assert abandoned.cancelled()
    clock.now += 1.0
    scheduler.done(())
    await settle()
    assert kept.done(), "the place went to the next in line"
    assert scheduler.delay(Urgency.EDIT, (limit,)) == 1.0, "no stale ticket holds the limit"


class CancelledOnGrant(InFlightBucket):
    """A bucket whose next grant the waiting task is cancelled right after, before it could go on."""

    def __init__(self, capacity: float, rate: float, clock: Clock) -> None:
        super().__init__(capacity, rate, clock=clock)
        self.victim: asyncio.Task[None] | None = None

    def try_acquire(self, reserve: int = 0) -> bool:
        taken = super().try_acquire(reserve)
        if taken and self.victim is not None:
            asyncio.get_running_loop().call_soon(self.victim.cancel)  # runs before the task resumes
        return taken


async def test_a_call_granted_but_cancelled_before_it_is_made_ends_at_once() -> None:
    """Nobody makes that call or ends it: a limit counting calls until they end must not count it for good."""
    clock = Clock()
    limit = CancelledOnGrant(1, 1.0, clock)
    scheduler = Scheduler()
    await scheduler.call(Urgency.POST, (limit,))
    limit.victim = asyncio.create_task(scheduler.call(Urgency.POST, (limit,)))
    await settle()
    scheduler.done((limit,))
    clock.now += 1.0
    scheduler.done(())
    await asyncio.gather(limit.victim, return_exceptions=True)
    assert limit.victim.cancelled()
    assert limit.available() == 0 and limit.delay() == pytest.approx(1.0), "ended when it was cancelled"
    clock.now += 1.0
    assert scheduler.try_call(Urgency.EDIT, (limit,))


async def test_a_call_cancelled_while_it_waits_ends_no_call() -> None:
    """It was never granted: the call still in flight keeps its hold on a limit counting calls until they end."""
    clock = Clock()
    limit = InFlightBucket(1, 1.0, clock=clock)
    scheduler = Scheduler()
    await scheduler.call(Urgency.POST, (limit,))  # in flight until its `done`
    waiting = asyncio.create_task(scheduler.call(Urgency.POST, (limit,)))
    await settle()
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled()
    clock.now += 1.0
    assert not scheduler.try_call(Urgency.EDIT, (limit,)), "the first call is still in flight"
    scheduler.done((limit,))
    clock.now += 1.0
    assert scheduler.try_call(Urgency.EDIT, (limit,))


class Watched(TokenBucket):
    """A token bucket that runs `on_look` when asked how long to wait and `on_take` when a call is taken."""

    def __init__(self, capacity: float, rate: float, clock: Clock) -> None:
        super().__init__(capacity, rate, clock=clock)
        self.on_look: Callable[[], object] = lambda: None
        self.on_take: Callable[[], object] = lambda: None

    def delay(self, reserve: int = 0) -> float:
        self.on_look()
        return super().delay(reserve)

    def try_acquire(self, reserve: int = 0) -> bool:
        taken = super().try_acquire(reserve)
        if taken:
            self.on_take()
        return taken


async def test_a_call_cancelled_while_the_queue_is_served_holds_up_no_one_behind_it() -> None:
    """Its ticket stays in the queue until its task runs again: the calls behind it are served in the same
    pass, not once that task has given up its place."""
    clock = Clock()
    stuck, shared = Watched(1, 0.001, clock), Watched(1, 1.0, clock)
    scheduler = Scheduler()
    assert stuck.try_acquire() and shared.try_acquire()
    first = asyncio.create_task(scheduler.call(Urgency.FINAL, (stuck,)))
    cancelled = asyncio.create_task(scheduler.call(Urgency.POST, (shared,)))
    behind = asyncio.create_task(scheduler.call(Urgency.POST, (shared,)))
    await settle()
    stuck.on_look = cancelled.cancel  # as the scheduler looks at the first call, before the second
    seen: list[bool] = []
    shared.on_take = lambda: seen.append(cancelled.done())
    await next_window(clock, scheduler)
    assert behind.done() and cancelled.cancelled()
    assert seen == [False], "served before the cancelled call's task ran again"
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)


async def test_a_call_that_gives_up_waiting_has_the_queue_looked_at_again() -> None:
    clock = Clock()
    limit = TokenBucket(1, 1.0, clock=clock)
    scheduler = Scheduler()
    assert limit.try_acquire()
    abandoned = asyncio.create_task(scheduler.call(Urgency.POST, (limit,)))
    kept = asyncio.create_task(scheduler.call(Urgency.POST, (limit,)))
    await settle()
    clock.now += 1.0  # room for one call; the scheduler's own timer is still a second away
    abandoned.cancel()
    await settle()
    assert kept.done()


async def test_a_call_waits_for_every_limit_it_draws_on() -> None:
    shared = TokenBucket(2, 10.0)
    channel_a, channel_b = TokenBucket(1, 5.0), TokenBucket(1, 5.0)
    scheduler = Scheduler()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await scheduler.call(Urgency.POST, (shared, channel_a))
    await scheduler.call(Urgency.POST, (shared, channel_b))
    # Both channels are free again only after their windows; the shared limit too.
    await asyncio.wait_for(scheduler.call(Urgency.POST, (shared, channel_a)), 2)
    assert loop.time() - started >= 0.15


def test_admission_counts_the_finals_already_pledged() -> None:
    clock = Clock()
    limit = TokenBucket(2, 1.0, clock=clock)
    scheduler = Scheduler()
    scheduler.pledge((limit,))
    assert scheduler.admits((limit,), within=0), "a second final fits the two calls exactly"
    scheduler.pledge((limit,))
    assert not scheduler.admits((limit,), within=0)
    assert scheduler.admits((limit,), within=1.0), "a third fits once one more call has refilled"
    assert not scheduler.admits((limit,), within=0.99)
    assert scheduler.admits((), within=0)


def test_the_admission_delay_is_the_time_until_one_more_final_could_be_pledged() -> None:
    limit = TokenBucket(2, 0.5, clock=Clock())
    scheduler = Scheduler()
    assert scheduler.admission_delay((limit,)) == 0.0, "a final fits now"
    scheduler.pledge((limit,))
    scheduler.pledge((limit,))
    assert scheduler.admission_delay((limit,)) == 2.0, "a third needs one more call, 2 s away"
    assert scheduler.admits((limit,), within=2.0) and not scheduler.admits((limit,), within=1.99)
    assert scheduler.admission_delay(()) == 0.0, "no limits, no wait"


def test_an_answer_whose_first_text_is_an_edit_is_admitted_only_with_room_for_both_calls() -> None:
    limit = TokenBucket(2, 1.0, clock=Clock())
    scheduler = Scheduler()
    scheduler.pledge((limit,))
    assert scheduler.admits((limit,), within=0), "a final alone fits"
    assert not scheduler.admits((limit,), within=0, calls=2), "the first text's edit and the final do not"
    assert scheduler.admits((limit,), within=1.0, calls=2)


def test_each_release_gives_back_one_pledge() -> None:
    clock = Clock()
    a, b = TokenBucket(2, 1.0, clock=clock), TokenBucket(2, 1.0, clock=clock)
    scheduler = Scheduler()
    scheduler.release((a,))  # nothing pledged: nothing to give back
    assert scheduler.pledged(a) == 0
    scheduler.pledge((a, b))
    scheduler.pledge((a,))
    assert (scheduler.pledged(a), scheduler.pledged(b)) == (2, 1)
    scheduler.release((a, b))
    assert (scheduler.pledged(a), scheduler.pledged(b)) == (1, 0)
    scheduler.release((a, b))
    scheduler.release((a, b))
    assert (scheduler.pledged(a), scheduler.pledged(b)) == (0, 0)


def test_each_unwant_gives_back_one_want() -> None:
    limit = TokenBucket(3, 1.0, clock=Clock())
    scheduler = Scheduler()
    scheduler.want((limit,))
    scheduler.want((limit,))
    scheduler.unwant((limit,))
    assert scheduler.try_call(Urgency.EDIT, (limit,))
    assert scheduler.try_call(Urgency.EDIT, (limit,))
    assert not scheduler.try_call(Urgency.EDIT, (limit,)), "the last call is left to the answer still waiting"


def test_only_droppable_calls_leave_pledged_finals_their_call() -> None:
    clock = Clock()
    limit = TokenBucket(2, 1.0, clock=clock)
    scheduler = Scheduler()
    scheduler.pledge((limit,))
    assert limit.try_acquire()  # one call left, and it is pledged
    assert scheduler.delay(Urgency.FINAL, (limit,)) == 0.0
    assert scheduler.delay(Urgency.POST, (limit,)) == 0.0
    assert scheduler.delay(Urgency.EDIT, (limit,)) == 1.0
    assert scheduler.delay(Urgency.TYPING, (limit,)) == 1.0
    assert not scheduler.try_call(Urgency.EDIT, (limit,))
    assert scheduler.delay(Urgency.EDIT, ()) == 0.0, "no limits, no wait"


def test_a_call_on_free_limits_is_made_at_once() -> None:
    clock = Clock()
    limit = TokenBucket(1, 1.0, clock=clock)
    scheduler = Scheduler()
    assert made_at_once(scheduler.call(Urgency.EDIT, ()))
    assert made_at_once(scheduler.call(Urgency.POST, (limit,)))
    assert limit.available() == 0


async def test_a_wait_closed_without_cancelling_leaves_nothing_behind() -> None:
    clock = Clock()
    limit = TokenBucket(1, 1.0, clock=clock)
    scheduler = Scheduler()
    assert limit.try_acquire()
    assert not made_at_once(scheduler.call(Urgency.POST, (limit,))), "it queued, then was closed"
    clock.now += 1.0
    assert scheduler.try_call(Urgency.EDIT, (limit,)), "no ticket of it holds the limit"


async def test_a_free_limit_serves_its_queue_before_newcomers() -> None:
    clock = Clock()
    limit = TokenBucket(1, 1.0, clock=clock)
    scheduler = Scheduler()
    assert limit.try_acquire()
    order: list[str] = []

    async def call(name: str, urgency: Urgency) -> None:
        await scheduler.call(urgency, (limit,))
        order.append(name)

    final = asyncio.create_task(call("final", Urgency.FINAL))
    await settle()
    clock.now += 1.0  # room for one call; the scheduler's own timer is still a second away
    assert not scheduler.try_call(Urgency.TYPING, (limit,)), "a droppable call never jumps the queue"
    assert scheduler.delay(Urgency.EDIT, (limit,)) == math.inf
    post = asyncio.create_task(call("post", Urgency.POST))
    await settle()
    assert order == ["final"], "the post queued, and the waiting final took the room at once"
    clock.now += 1.0
    scheduler.done((limit,))
    await settle()
    assert order == ["final", "post"]
    await asyncio.gather(final, post)


async def test_every_waiting_call_holds_its_limits_until_served() -> None:
    clock = Clock()
    limit = TokenBucket(2, 1.0, clock=clock)
    scheduler = Scheduler()
    assert limit.try_acquire() and limit.try_acquire()
    first = asyncio.create_task(scheduler.call(Urgency.POST, (limit,)))
    second = asyncio.create_task(scheduler.call(Urgency.POST, (limit,)))
    await settle()
    clock.now += 1.0
    scheduler.done(())
    await settle()
    assert first.done() and not second.done()
    clock.now += 1.0
    assert not scheduler.try_call(Urgency.EDIT, (limit,)), "the second still waits: nothing droppable first"
    scheduler.done(())
    await settle()
    assert second.done()
    clock.now += 1.0
    assert scheduler.try_call(Urgency.EDIT, (limit,)), "nobody waits any more"


async def test_a_call_waiting_on_a_busy_limit_holds_up_no_one_else() -> None:
    clock = Clock()
    slow, quick = TokenBucket(1, 0.1, clock=clock), TokenBucket(1, 1.0, clock=clock)
    scheduler = Scheduler()
    assert slow.try_acquire() and quick.try_acquire()
    final = asyncio.create_task(scheduler.call(Urgency.FINAL, (slow,)))
    post = asyncio.create_task(scheduler.call(Urgency.POST, (quick,)))
    await settle()
    clock.now += 1.0
    scheduler.done(())
    await settle()
    assert post.done() and not final.done()
    final.cancel()
    await asyncio.gather(final, return_exceptions=True)


async def test_a_penalty_looks_at_the_waiting_calls_again() -> None:
    clock = Clock()
    channel, workspace = TokenBucket(1, 1.0, clock=clock), TokenBucket(1, 1.0, clock=clock)
    scheduler = Scheduler()
    assert channel.try_acquire()
    waiting = asyncio.create_task(scheduler.call(Urgency.POST, (channel,)))
    await settle()
    clock.now += 1.0  # the channel has room; the scheduler's own timer is still a second away
    scheduler.penalize((workspace,), 5.0)
    assert workspace.delay() == 5.0
    await settle()
    assert waiting.done()


async def test_a_waiting_call_sleeps_until_its_limit_could_serve_it() -> None:
    clock = Clock()
    limit = CountingBucket(1, 0.1, clock)
    scheduler = Scheduler()
    assert limit.try_acquire()
    waiting = asyncio.create_task(scheduler.call(Urgency.POST, (limit,)))
    for _ in range(50):
        await asyncio.sleep(0)
    assert limit.delays < 10, "the scheduler polled instead of sleeping"
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)


# --- answers on shared limits -----------------------------------------------------------------------


def limits(edits: TokenBucket, scheduler: Scheduler) -> TargetLimits:
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
    scheduler = Scheduler()
    first, second = (
        RecordingTarget(limits(workspace, scheduler)),
        RecordingTarget(limits(workspace, scheduler)),
    )
    streamed, held = StreamingReply(first), StreamingReply(second)
    for reply in (streamed, held):
        reply.start_typing()
        reply.update("Hello")
    await until(lambda: first.kinds("post") and len(second.kinds("typing")) >= 2)
    assert first.kinds("post"), "the first answer streams: its final is pledged"
    assert not second.kinds("post"), "the second waits to be posted once"
    assert len(second.kinds("typing")) >= 2, "and keeps its sign of life meanwhile"
    await held.finish("Hello, world")
    await streamed.finish("Hello there")
    assert second.kinds("post")[0].text == "Hello, world" and not second.kinds("edit")
    assert first.messages == {"m1": "Hello there"}, "the pledged final edit went out at once"
    assert scheduler.pledged(workspace) == 0


async def test_pledged_finals_are_not_spent_on_intermediate_edits() -> None:
    clock = Clock()
    workspace = TokenBucket(2, 0.001, clock=clock)
    scheduler = Scheduler()
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
    await until(lambda: target.kinds("post"))
    await reply.finish("The beginning and the end.")
    last = target.kinds("post")[-1].text
    assert last == f"{RESCUED}\n\nThe beginning and the end."
    assert target.notices == []


@pytest.mark.parametrize("interval", [None, 0.02])
async def test_typing_that_finds_no_room_is_tried_again_until_the_first_text(interval: float | None) -> None:
    clock = Clock()
    shared = TokenBucket(1, 8.0, clock=clock)
    scheduler = Scheduler()
    assert scheduler.try_call(Urgency.TYPING, (shared,))  # someone else's typing took the window
    target = RecordingTarget(
        TargetLimits(max_chars=2000, typing_interval=interval, typing_limits=(shared,), scheduler=scheduler)
    )
    reply = StreamingReply(target)
    reply.start_typing()
    await settle()
    assert not target.kinds("typing"), "no room on the limits' clock, which stands still"
    clock.now += 0.125
    await until(lambda: target.kinds("typing"))  # typing went out once there was room
    await reply.finish("done")



def test_no_tool_line_moves_while_an_answer_has_shown_nothing() -> None:
    limit = TokenBucket(5, 0.001, clock=Clock())
    scheduler = Scheduler()
    scheduler.silent((limit,))
    scheduler.silent((limit,))
    assert not scheduler.try_call(Urgency.PROGRESS, (limit,)), "two answers show nothing yet"
    assert scheduler.delay(Urgency.PROGRESS, (limit,)) == math.inf
    assert scheduler.try_call(Urgency.TYPING, (limit,)), "a sign of life waits for no one"
    scheduler.heard((limit,))
    assert not scheduler.try_call(Urgency.PROGRESS, (limit,)), "one still shows nothing"
    scheduler.heard((limit,))
    assert scheduler.try_call(Urgency.PROGRESS, (limit,))


def _rendered(raw: object) -> str:
    return raw.render(streaming=True) if isinstance(raw, AnswerView) else str(raw)


async def test_under_load_every_answer_with_a_tool_line_shows_a_sign_of_life() -> None:
    """Sixteen answers at once on a limit of 4 calls, then 8 a second, each with a tool line long before
    its text (issue 16 item 6). A tool line decides nothing: no answer pledges or waits for a final yet,
    so every one shows something (its tool line or typing) within about two seconds, and no tool line
    moves while an answer shows nothing."""
    shared = TokenBucket(4, 8.0)
    scheduler = Scheduler()
    limits = TargetLimits(
        max_chars=2000,
        edit_burst=5,
        edit_window=0.2,
        posts=(shared,),
        edits=(shared,),
        typing_limits=(shared,),
        scheduler=scheduler,
    )
    targets = [RecordingTarget(limits) for _ in range(16)]
    replies = [StreamingReply(t, render=_rendered) for t in targets]
    views = [AnswerView(ThinkingMode.FOLD, TEST_RULES.mentions) for _ in targets]

    def tool_step(k: int) -> None:
        for reply, view in zip(replies, views, strict=True):
            view.on_event(ToolStarted(f"t{k}", "web_search", f"query {k}"))
            reply.update(view)

    def showing() -> int:
        return sum(any(c.kind in ("typing", "post") for c in t.calls) for t in targets)

    for reply in replies:
        reply.start_typing()
    tool_step(0)
    for k in range(1, 13):
        await asyncio.sleep(0.25)
        if showing() == len(targets):
            break
        tool_step(k)
    assert showing() == len(targets), f"{showing()} of {len(targets)} answers showed a sign of life"
    await asyncio.gather(*(reply.finish("The answer.") for reply in replies))
    assert [t.text for t in targets] == ["The answer."] * len(targets)
    assert scheduler.pledged(shared) == 0 and scheduler.delay(Urgency.PROGRESS, (shared,)) < math.inf


# --- places in a channel's line ---------------------------------------------------------------------


async def test_answers_that_started_go_first_and_askers_take_turns() -> None:
    clock = Clock()
    channel = TokenBucket(1, 1.0, clock=clock)
    scheduler = Scheduler()
    first_of_a = scheduler.join((channel,), "A", 2)
    second_of_a = scheduler.join((channel,), "A", 2)
    first_of_b = scheduler.join((channel,), "B", 2)
    await scheduler.call(Urgency.POST, (channel,), first_of_a)  # A's first answer shows its first text
    order: list[str] = []

    async def call(name: str, place: Place) -> None:
        await scheduler.call(Urgency.POST, (channel,), place)
        order.append(name)

    tasks = [
        asyncio.create_task(call("A's second answer", second_of_a)),
        asyncio.create_task(call("B's first answer", first_of_b)),
        asyncio.create_task(call("the rest of A's first answer", first_of_a)),
    ]
    await settle()
    for _ in range(3):
        await next_window(clock, scheduler)
    await asyncio.gather(*tasks)
    assert order == ["the rest of A's first answer", "B's first answer", "A's second answer"]


@pytest.mark.parametrize("start", ["on no limit", "at once", "after waiting"])
async def test_an_answer_that_started_goes_before_answers_that_joined_earlier(start: str) -> None:
    """However its first call went, an answer showing something goes first, even when it is not the first
    answer to start and others joined the line before it."""
    clock = Clock()
    channel = TokenBucket(1, 1.0, clock=clock)
    scheduler = Scheduler()
    await scheduler.call(Urgency.POST, (), scheduler.join((channel,), "C", 1))  # an answer started earlier
    earlier, showing = scheduler.join((channel,), "B", 2), scheduler.join((channel,), "A", 2)
    if start == "on no limit":
        await scheduler.call(Urgency.POST, (), showing)
        assert channel.try_acquire()
    elif start == "at once":
        assert made_at_once(scheduler.call(Urgency.POST, (channel,), showing))
    else:
        assert channel.try_acquire()
        first = asyncio.create_task(scheduler.call(Urgency.POST, (channel,), showing))
        await settle()
        assert not first.done()
        await next_window(clock, scheduler)
        assert first.done()
    order: list[str] = []

    async def call(name: str, place: Place) -> None:
        await scheduler.call(Urgency.POST, (channel,), place)
        order.append(name)

    tasks = [
        asyncio.create_task(call("B's first text", earlier)),
        asyncio.create_task(call("A's next message", showing)),
    ]
    await settle()
    for _ in range(2):
        await next_window(clock, scheduler)
    assert order == ["A's next message", "B's first text"]
    await asyncio.gather(*tasks)


async def test_answers_not_started_go_in_the_order_they_joined_not_the_order_they_call() -> None:
    clock = Clock()
    channel = TokenBucket(1, 1.0, clock=clock)
    scheduler = Scheduler()
    assert channel.try_acquire()
    first, second = scheduler.join((channel,), "A", 1), scheduler.join((channel,), "B", 1)
    order: list[str] = []

    async def call(name: str, place: Place | None) -> None:
        await scheduler.call(Urgency.POST, (channel,), place)
        order.append(name)

    tasks = [
        asyncio.create_task(call("second to join", second)),
        asyncio.create_task(call("first to join", first)),
        asyncio.create_task(call("a notice", None)),
    ]
    await settle()
    for _ in range(3):
        await next_window(clock, scheduler)
    assert order == ["a notice", "first to join", "second to join"]
    await asyncio.gather(*tasks)


async def test_a_final_of_a_later_answer_waits_behind_an_answer_already_showing() -> None:
    clock = Clock()
    channel = TokenBucket(1, 1.0, clock=clock)
    scheduler = Scheduler()
    showing, later = scheduler.join((channel,), "A", 2), scheduler.join((channel,), "B", 1)
    await scheduler.call(Urgency.POST, (channel,), showing)
    order: list[str] = []

    async def call(name: str, urgency: Urgency, place: Place) -> None:
        await scheduler.call(urgency, (channel,), place)
        order.append(name)

    tasks = [
        asyncio.create_task(call("later answer, complete", Urgency.FINAL, later)),
        asyncio.create_task(call("answer showing, its next message", Urgency.POST, showing)),
    ]
    await settle()
    for _ in range(2):
        await next_window(clock, scheduler)
    await asyncio.gather(*tasks)
    assert order == ["answer showing, its next message", "later answer, complete"]


def test_the_backlog_is_what_the_line_owes_at_the_limits_rate() -> None:
    clock = Clock()
    channel = TokenBucket(3, 0.5, clock=clock)
    scheduler = Scheduler()
    assert scheduler.backlog((channel,), 3) == 0.0, "a burst the limit holds costs no wait"
    place = scheduler.join((channel,), "A", 4)
    other = scheduler.join((channel,), "B", 3)
    assert scheduler.backlog((channel,)) == 8.0  # 7 posts, 3 at once, then one every 2 s
    assert scheduler.backlog((channel,), 1) == 10.0
    scheduler.owe(place, 1)
    assert scheduler.backlog((channel,)) == 2.0
    scheduler.leave(place)
    scheduler.leave(other)
    assert scheduler.backlog((channel,)) == 0.0
    again = scheduler.join((channel,), "A", 1)
    assert again.round == 0, "a user who left the line starts again in the first round"


def test_an_askers_answer_joins_behind_their_answers_still_in_line() -> None:
    channel = TokenBucket(1, 1.0, clock=Clock())
    scheduler = Scheduler()
    first, second = scheduler.join((channel,), "A", 1), scheduler.join((channel,), "A", 1)
    assert (first.round, second.round) == (0, 1)
    scheduler.leave(first)
    assert scheduler.join((channel,), "A", 1).round == 1, "one of A's answers is still in line"
    assert scheduler.backlog(()) == 0.0 and scheduler.backlog((), 5) == 0.0, "no limits, no wait"


def test_an_answer_joins_a_line_only_if_it_clears_in_time() -> None:
    channel = TokenBucket(3, 1.0)
    scheduler = Scheduler()

    def reply() -> StreamingReply:
        return StreamingReply(
            RecordingTarget(TargetLimits(max_chars=1000, posts=(channel,), scheduler=scheduler))
        )

    joined = [reply() for _ in range(6)]
    assert all(r.join("A", 9_500) is None for r in joined), (
        "10 posts each: 60, 3 at once, 57 s at one a second"
    )
    late = reply()
    wait = late.join("B", 9_500)
    assert wait is not None and 6.9 <= wait <= 7.0, "with it, 67 s: it could join in 7 s"
    joined[0].leave()
    assert late.join("B", 9_500) is None


async def test_time_waiting_in_line_does_not_count_against_the_finish_timeout() -> None:
    channel = TokenBucket(1, 1 / 0.6)  # one post, then the next after 0.6 s
    scheduler = Scheduler()
    assert scheduler.try_call(Urgency.POST, (channel,))  # another answer's post took it
    target = RecordingTarget(TargetLimits(max_chars=2000, posts=(channel,), scheduler=scheduler))
    reply = StreamingReply(target, finish_timeout=0.2)
    assert reply.join("A", 100) is None
    reply.update("Hello")
    await reply.finish("Hello, world")
    assert [c.text for c in target.kinds("post")] == ["Hello, world"], "posted once, not rescued"
    assert scheduler.backlog((channel,)) == 0.0


async def test_a_429_is_waited_out_a_few_times_then_the_rest_is_posted_anew() -> None:
    posts = TokenBucket(5, 0.001)
    scheduler = Scheduler()
    target = RecordingTarget(
        TargetLimits(max_chars=2000, edit_burst=5, edit_window=0.2, posts=(posts,), scheduler=scheduler),
        rate_limit_edits=1000,
        retry_after=0.01,
    )
    reply = StreamingReply(target)  # the default finish timeout: a minute
    reply.update("The beginning")
    await until(lambda: target.kinds("post"))
    started = asyncio.get_running_loop().time()
    await reply.finish("The beginning and the end.")
    assert asyncio.get_running_loop().time() - started < 30, "no minute's wait for the finish timeout"
    assert len(target.kinds("rate_limited")) == FAILED_TRIES
    assert target.kinds("post")[-1].text == f"{RESCUED}\n\nThe beginning and the end."
    assert posts.available() == 3, "the rescue's post went through the scheduler, on the channel's limit"


async def test_a_held_answer_streams_once_a_final_can_be_pledged_for_it() -> None:
    clock = Clock()
    workspace = TokenBucket(1, 0.001, clock=clock)
    scheduler = Scheduler()
    first, second = (
        RecordingTarget(limits(workspace, scheduler)),
        RecordingTarget(limits(workspace, scheduler)),
    )
    streamed, held = StreamingReply(first), StreamingReply(second)
    streamed.update("Hello")
    await until(lambda: first.kinds("post"))
    held.update("Hi")
    await settle()
    assert not second.kinds("post"), "held: the one call is pledged to the first answer's final"
    await streamed.finish("Hello there")
    clock.now += 1000  # the workspace's allowance refills
    await until(lambda: second.kinds("post"))
    assert second.kinds("post")[0].text == "Hi", "it shows its first text before it completes"
    await held.finish("Hi there")
    assert second.messages == {"m1": "Hi there"}
    assert scheduler.pledged(workspace) == 0


def test_droppable_calls_leave_a_call_for_each_answer_waiting_to_pledge_one() -> None:
    clock = Clock()
    limit = TokenBucket(3, 1.0, clock=clock)
    scheduler = Scheduler()
    scheduler.pledge((limit,))
    scheduler.want((limit,))
    assert scheduler.try_call(Urgency.EDIT, (limit,)), "3 calls: one pledged, one wanted, one spare"
    assert not scheduler.try_call(Urgency.EDIT, (limit,))
    assert scheduler.admits((limit,), 0.0), "what was left is there for the answer waiting"
    scheduler.unwant((limit,))
    assert scheduler.try_call(Urgency.TYPING, (limit,))
    assert scheduler.admission_delay((limit,)) == 1.0, "the pledged final holds the last call"


def test_the_line_is_the_channels_not_the_bots() -> None:
    bot_wide, channel = TokenBucket(1, 0.001), TokenBucket(3, 1.0)
    scheduler = Scheduler()
    busy = StreamingReply(
        RecordingTarget(TargetLimits(max_chars=1000, posts=(bot_wide,), scheduler=scheduler))
    )
    assert busy.join("A", 500) is None, "an empty line takes anyone"
    quiet = StreamingReply(
        RecordingTarget(TargetLimits(max_chars=1000, posts=(bot_wide, channel), scheduler=scheduler))
    )
    assert quiet.join("B", 9_500) is None, "the bot-wide allowance is far behind, this channel's is not"


async def test_a_target_showing_steps_apart_never_sees_the_tool_line_in_its_text() -> None:
    """A target that shows tool steps apart (`steps_apart`) is told each step through `status`, at most
    one call a second, "" once a step ends with no other after it, and its text never holds a tool line."""
    target = RecordingTarget(TargetLimits(max_chars=2000, edit_burst=5, edit_window=0.2, steps_apart=True))
    view = AnswerView(ThinkingMode.FOLD, TEST_RULES.mentions)
    reply = StreamingReply(target, render=_rendered_apart)
    reply.start_typing()
    view.on_event(ToolStarted("t1", "web_search", "first query"))
    reply.update(view)
    await until(lambda: target.kinds("status"))
    view.on_event(ToolStarted("t2", "web_search", "second query"))
    reply.update(view)
    await until(lambda: len(target.kinds("status")) >= 2)
    text = AnswerText()
    text.append("The answer, ")
    view.on_text(text)
    reply.update(view)
    await until(lambda: target.kinds("post") and len(target.kinds("status")) >= 3)
    view.on_event(ToolStarted("t3", "fetch", "https://example.com/page"))
    reply.update(view)
    await until(lambda: len(target.kinds("status")) >= 4)
    await reply.finish("The answer, found.")
    steps = [c.text for c in target.kinds("status")]
    assert steps == [
        "🔎 Searching the web for “first query”…",
        "🔎 Searching the web for “second query”…",
        "",
        "📖 Reading example.com/page…",
    ]
    calls = target.kinds("status")
    assert all(b.at - a.at >= 0.9 for a, b in itertools.pairwise(calls)), "at most one a second"
    written = [c.text for c in target.calls if c.kind in ("post", "edit")]
    assert written and not any("Searching" in t or "Reading" in t or t.endswith("…_") for t in written)
    assert target.text == "The answer, found."


def _rendered_apart(raw: object) -> str:
    """What ChatCore renders for a target showing steps apart."""
    return raw.render(streaming=True, tool_line=False) if isinstance(raw, AnswerView) else str(raw)
