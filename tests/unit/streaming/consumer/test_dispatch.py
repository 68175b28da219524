"""The fixed dispatch policy: when a batch goes, what is held, what real time sheds."""

from __future__ import annotations

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


def test_real_time_keeps_one_round_of_calls_but_two_frames_per_waiting_stream():
    policy = FixedDispatch(4, 2, 0.005, True)
    assert policy.shed_bound(waiting_streams=3) == 8
    assert policy.shed_bound(waiting_streams=10) == 20


def _serve(policy: AdaptiveDispatch, capacity_fps: float, waiting: int, calls: int = 200) -> list[float]:
    """A server that does ``capacity_fps``: a call's round trip is the frames in flight over the
    capacity (they share it) plus 10 ms. ``waiting`` frames are always ready. The round trips seen."""
    round_trips = []
    for _ in range(calls):
        policy.send_now(ready=waiting, in_flight=0, waited_s=0.0, stopping=False)
        in_flight = policy.batch_size * policy.calls
        round_trips.append(0.01 + in_flight / capacity_fps)
        policy.observe(policy.batch_size, round_trips[-1])
    return round_trips


def test_adaptive_starts_small_and_the_flags_bound_it():
    policy = AdaptiveDispatch(max_batch=8, max_calls=4, linger_s=0.005, max_age_s=0.3)
    assert (policy.batch_size, policy.calls) == (1, 4), "one frame per call it may make"
    _serve(policy, capacity_fps=10_000, waiting=100)  # a server that is never the limit
    assert (policy.batch_size, policy.calls) == (8, 4) and policy.window == 32


def test_adaptive_grows_calls_before_batches():
    policy = AdaptiveDispatch(max_batch=8, max_calls=4, linger_s=0.005, max_age_s=0.3)
    shapes = []
    for window in (1, 2, 3, 6, 16, 17, 32):
        policy.window = window
        shapes.append((policy.batch_size, policy.calls))
    assert shapes == [(1, 1), (1, 2), (1, 3), (1, 4), (4, 4), (4, 4), (8, 4)]


def test_adaptive_keeps_the_round_trip_near_twice_the_age_bound_at_overload():
    policy = AdaptiveDispatch(max_batch=8, max_calls=8, linger_s=0.005, max_age_s=0.3)
    round_trips = _serve(policy, capacity_fps=40, waiting=100, calls=400)
    settled = round_trips[-100:]
    # AIMD saws around its target: on average at it, a smoothing lag's overshoot at most.
    assert sum(settled) / len(settled) <= 0.6 * 1.1, "on average at twice the age bound"
    assert max(settled) <= 0.6 * 1.5, "never far past it"
    # and it keeps the server busy: frames in flight near what the target allows (40 fps x 0.59 s)
    assert policy.batch_size * policy.calls >= 16


def test_adaptive_stays_small_below_capacity():
    policy = AdaptiveDispatch(max_batch=8, max_calls=8, linger_s=0.005, max_age_s=0.3)
    _serve(policy, capacity_fps=200, waiting=0)  # frames go one at a time as they come
    assert policy.window == 8.0 and policy.batch_size == 1
