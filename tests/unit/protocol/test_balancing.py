"""FollowingChannel's decisions, with a scripted resolver and fake channels (no network).

The real thing (a pod that turns Ready later gets calls within seconds) is proven on the
real node, tests/test_kube_node.py.
"""

from __future__ import annotations

import asyncio

import pytest

from rtvi.protocol.balancing import FollowingChannel, dns_name


class FakeChannel:
    def __init__(self, ready: bool = True) -> None:
        self.ready = ready
        self.closed_with: list[float | None] = []

    async def channel_ready(self) -> None:
        if not self.ready:
            await asyncio.Event().wait()

    async def close(self, grace: float | None = None) -> None:
        self.closed_with.append(grace)


class Script:
    """Answers one lookup per tick from a list; the last answer repeats."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.asked = 0

    async def __call__(self, host: str, port: int) -> frozenset[str]:
        self.asked += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return frozenset(answer)


def follow(script: Script, channels: list[FakeChannel], ticks: int) -> tuple[FollowingChannel, list[FakeChannel]]:
    """Run the follower for ``ticks`` lookups; which channels were made, in order."""
    made: list[FakeChannel] = []

    def make() -> FakeChannel:
        made.append(channels.pop(0) if channels else FakeChannel())
        return made[-1]

    async def run() -> FollowingChannel:
        following = FollowingChannel("dns:///inference-headless:8001", make, interval_s=0.001, ready_timeout_s=0.05,
                                     grace_s=7, resolve=script)
        following.channel()
        while script.asked < ticks:
            await asyncio.sleep(0.001)
        await following.close()
        return following

    return asyncio.run(run()), made


def test_the_first_answer_brings_a_channel_made_for_it_and_the_same_answer_no_other():
    script = Script({"10.0.0.1"})
    _, made = follow(script, [], ticks=20)
    assert len(made) == 2  # the first channel, and the one made for the first answer


def test_a_new_address_brings_a_new_channel_and_the_old_one_drains_with_grace():
    script = Script({"10.0.0.1"}, {"10.0.0.1"}, {"10.0.0.1", "10.0.0.2"})
    following, made = follow(script, [], ticks=20)
    assert len(made) == 3
    first_answer, second_answer = made[1], made[2]
    assert first_answer.closed_with == [7]  # calls in flight get the grace period
    assert second_answer.closed_with == [None]  # the one in use when the client closed
    assert following._current is second_answer


def test_a_channel_that_does_not_get_ready_is_dropped_and_tried_again_on_the_next_change():
    script = Script({"10.0.0.1"}, {"10.0.0.1", "10.0.0.2"}, {"10.0.0.1"})
    stuck = FakeChannel(ready=False)
    following, made = follow(script, [FakeChannel(), FakeChannel(), stuck], ticks=20)
    assert stuck.closed_with == [None]  # given up at once, never used
    assert following._current is made[1]


def test_no_answer_never_replaces_a_channel():
    script = Script({"10.0.0.1"}, OSError("Name or service not known"), set(), {"10.0.0.1"})
    _, made = follow(script, [], ticks=20)
    assert len(made) == 2


@pytest.mark.parametrize("target, expected", [
    ("dns:///rtvi-inference-headless:8001", ("rtvi-inference-headless", 8001)),
    ("rtvi-inference-headless.rtvi.svc.cluster.local:8001", ("rtvi-inference-headless.rtvi.svc.cluster.local", 8001)),
    ("localhost:8001", ("localhost", 8001)),
    ("dns:inference", ("inference", 443)),
    ("127.0.0.1:8001", None),
    ("[::1]:8001", None),
    ("dns://10.96.0.10:53/inference:8001", None),
    ("unix:///run/rtvi.sock", None),
    ("ipv4:10.0.0.1:8001,10.0.0.2:8001", None),
])
def test_only_host_names_resolved_through_dns_are_followed(target, expected):
    assert dns_name(target) == expected


def test_closing_while_a_new_channel_gets_ready_closes_that_channel_too():
    stuck = FakeChannel(ready=False)

    async def run() -> FollowingChannel:
        made = iter([FakeChannel(), stuck])
        following = FollowingChannel("dns:///inference-headless:8001", lambda: next(made), interval_s=0.001,
                                     ready_timeout_s=60, resolve=Script({"10.0.0.1"}))
        following.channel()
        await asyncio.sleep(0.05)  # the follower waits for the stuck channel now
        await following.close()
        return following

    following = asyncio.run(run())
    assert stuck.closed_with == [None] and following._current.closed_with == [None]
