"""The dispatch policies: when a batch goes, what is held, what real time sheds, and how the
adaptive one finds its window against simulated servers (delivery rate as a function of the
frames in flight, round trips by Little's law)."""

from __future__ import annotations

from collections.abc import Callable

from rtvi.streaming.consumer.dispatch import REAL_TIME_HELD_FACTOR, AdaptiveDispatch, FixedDispatch


def test_a_batch_goes_when_full_when_it_lingered_or_while_stopping():
    policy = FixedDispatch(4, 2, 0.005, False)
    assert not policy.send_now(ready=0, in_flight=0, waited_s=1.0, stopping=True)
    assert policy.send_now(ready=4, in_flight=0, waited_s=0.0, stopping=False)
    assert not policy.send_now(ready=3, in_flight=0, waited_s=0.001, stopping=False)
    assert policy.send_now(ready=3, in_flight=0, waited_s=0.005, stopping=False)
    assert policy.send_now(ready=1, in_flight=1, waited_s=0.0, stopping=True)
    assert not policy.send_now(ready=8, in_flight=2, waited_s=1.0, stopping=True), "never more calls than allowed"


def test_keep_all_holds_two_rounds_and_real_time_reads_on():
    keep_all = FixedDispatch(4, 2, 0.005, False)
    assert keep_all.hold_limit == 16 and keep_all.fetch_room(10) == 6 and keep_all.fetch_room(16) == 0
    real_time = FixedDispatch(4, 2, 0.005, True)
    assert real_time.hold_limit == 16 * REAL_TIME_HELD_FACTOR
    assert real_time.fetch_room(40) == 16, "one read is never more than two rounds of calls"


def test_real_time_keeps_two_calls_worth_of_frames_but_two_per_waiting_stream():
    policy = FixedDispatch(4, 2, 0.005, True)
    assert policy.shed_bound(waiting_streams=3) == 8
    assert policy.shed_bound(waiting_streams=10) == 20


def _serve(policy: AdaptiveDispatch, rate_of: Callable[[int], float], waiting: int = 100,
           calls: int = 600) -> list[tuple[int, float]]:
    """Calls against a server that delivers ``rate_of(frames in flight)`` frames/s; ``waiting``
    frames always ready (0: below capacity, the window never the limit). Each call's window and
    round trip."""
    now, seen = 0.0, []
    for _ in range(calls):
        policy.send_now(ready=waiting, in_flight=policy.calls if waiting else 0, waited_s=0.0, stopping=False)
        in_flight = policy.batch_size * policy.calls
        rate = rate_of(in_flight)
        now += policy.batch_size / rate
        seen.append((in_flight, in_flight / rate))
        policy.observe(policy.batch_size, seen[-1][1], now)
    return seen


def _flat(knee: int, fps: float) -> Callable[[int], float]:
    """A server busy from ``knee`` frames in flight on: more only queue (a CPU model that gains
    nothing from larger batches)."""
    return lambda frames: fps * min(1.0, frames / knee)


def _batching(fps: float, half: int) -> Callable[[int], float]:
    """A server that delivers more with every frame in flight, half its best at ``half``."""
    return lambda frames: fps * frames / (frames + half)


def test_adaptive_starts_with_a_frame_per_call_and_the_flags_bound_it():
    policy = AdaptiveDispatch(max_batch=8, max_calls=4, linger_s=0.005, max_age_s=0.3)
    assert (policy.batch_size, policy.calls) == (1, 4), "one frame per call it may make"
    _serve(policy, lambda frames: frames / 0.01)  # a server that is never the limit
    assert (policy.batch_size, policy.calls) == (8, 4) and policy.window == 32


def test_adaptive_grows_calls_before_batches():
    policy = AdaptiveDispatch(max_batch=8, max_calls=4, linger_s=0.005, max_age_s=0.3)
    shapes = []
    for window in (1, 2, 3, 6, 16, 17, 32):
        policy.window = window
        shapes.append((policy.batch_size, policy.calls))
    # the smallest batch that fits the window in the calls allowed, and as many calls as it takes
    assert shapes == [(1, 1), (1, 2), (1, 3), (2, 3), (4, 4), (5, 4), (8, 4)]


def test_adaptive_shrinks_to_what_a_busy_server_needs():
    """Frames beyond the server's need only queue there: the window comes down to about that need,
    and the round trip with it, while the server stays busy."""
    policy = AdaptiveDispatch(max_batch=8, max_calls=8, linger_s=0.005, max_age_s=0.3)
    settled = _serve(policy, _flat(knee=3, fps=25))[-200:]
    assert max(frames for frames, _ in settled) <= 5
    rate = sum(_flat(3, 25)(frames) for frames, _ in settled) / len(settled)
    assert rate >= 0.9 * 25, "tries below the need are short and rare"
    assert sum(rtt for _, rtt in settled) / len(settled) <= 0.2, "the old cap let it reach 0.6 s"


def test_adaptive_tries_smaller_steps_once_settled():
    """Every try raises or lowers the round trip while it lasts: once tries stop paying they
    change the window by a quarter, not a half."""
    policy = AdaptiveDispatch(max_batch=8, max_calls=8, linger_s=0.005, max_age_s=0.3)
    settled = [frames for frames, _ in _serve(policy, _flat(knee=12, fps=25), calls=1500)[-600:]]
    usual = max(set(settled), key=settled.count)
    assert 12 <= usual <= 16
    assert max(settled) <= round(usual * 1.25) and min(settled) >= round(usual / 1.25)


def test_adaptive_grows_while_a_larger_window_pays():
    policy = AdaptiveDispatch(max_batch=8, max_calls=8, linger_s=0.005, max_age_s=0.3)
    best = _batching(fps=130, half=15)
    settled = _serve(policy, best)[-200:]
    assert min(frames for frames, _ in settled) >= 27
    assert sum(best(frames) for frames, _ in settled) / len(settled) >= 0.85 * best(64)


def test_adaptive_keeps_the_round_trip_within_twice_the_age_bound():
    policy = AdaptiveDispatch(max_batch=8, max_calls=8, linger_s=0.005, max_age_s=0.05)
    settled = _serve(policy, _batching(fps=100, half=6), calls=2000)[-300:]  # 0.1 s at 4 frames in flight
    round_trips = [rtt for _, rtt in settled]
    assert sum(round_trips) / len(round_trips) <= 0.1 * 1.1
    assert max(round_trips) <= 0.1 * 1.5
    # the cap allows 4 frames (0.1 s); a larger window pays here, so it stays near that, bar down-tries
    assert sum(frames for frames, _ in settled) / len(settled) >= 2.5


def test_adaptive_stays_put_below_capacity():
    policy = AdaptiveDispatch(max_batch=8, max_calls=8, linger_s=0.005, max_age_s=0.3)
    _serve(policy, _flat(knee=3, fps=200), waiting=0)  # frames go one at a time as they come
    assert policy.window == 8 and policy.batch_size == 1, "a burst still finds every call"
