"""When to send a batch, how large, how many calls at once, and how much to hold: pure policy.

The event loop (``loop``) asks; this module only answers, from numbers it is given (no
clock, no Kafka, no gRPC), so every rule is unit-tested in-process.

Two policies share the rules of ``Dispatch``:

* ``FixedDispatch``: always ``--batch-size`` frames per call and ``--max-in-flight`` calls
  (keep-all mode, where throughput is all that counts, and ``--dispatch fixed``).
* ``AdaptiveDispatch`` (real time, the default there): the flags become upper bounds, and a
  window of frames in flight is learnt from the round trips it sees, AIMD-style (Clipper's
  adaptive batching and TCP's congestion window work the same way). The window grows by a
  frame each time a call returns while frames were still waiting, and shrinks by a tenth
  (once per round of calls) when the smoothed round trip passes twice the age bound: a
  frame sent just within the age bound then arrives within it plus a round trip that the
  server needs to batch well (ROUND_TRIP_SHARE says how that was measured). Below
  capacity nothing waits, the window stays small and a frame's latency stays near one
  round trip; at overload it grows until the server is kept busy, bounded by latency.
"""

from __future__ import annotations

# Real time reads on while frames are dropped; frames held behind one still in flight
# (in order, for the commit) are bounded at this many times the ready buffer.
REAL_TIME_HELD_FACTOR = 16
# Adaptive: the smoothed round trip may reach this multiple of the age bound. Measured at twice
# the capacity of a Zen 4 (benchmarks/bench_latency.py): at 0.5 and 1.0 the window stayed too small
# for the server to batch well (49-87% of keep-all's throughput); at 2.0 it matched keep-all, with
# p99 within the age bound plus two median round trips. Not on an AVX2-only CPU, where the model is
# five times slower: 79-90% of keep-all, p99 90-370 ms past that bound (README, Benchmarks).
ROUND_TRIP_SHARE = 2.0
DECREASE = 0.9  # multiplicative decrease of the window: a small sawtooth keeps the round trip steady
SMOOTHING = 0.2  # weight of the newest round trip in the moving average


class Dispatch:
    """The rules both policies share; ``batch_size`` and ``calls`` are theirs to choose.

    * A batch goes out when a full one is ready, when the oldest ready frame has waited
      ``linger_s`` (then smaller), or while stopping; never more than ``calls`` calls at once.
    * Keep-all holds at most two rounds of calls at the flags' sizes and then reads nothing;
      real time reads on, holding up to REAL_TIME_HELD_FACTOR times that.
    * Real time sheds what one round of calls cannot take: past ``batch_size x calls``
      waiting frames (at least two per waiting stream) the oldest of the longest stream goes.
    """

    def __init__(self, max_batch: int, max_calls: int, linger_s: float, real_time: bool) -> None:
        self.max_batch = max_batch
        self.max_calls = max_calls
        self.linger_s = linger_s
        self.real_time = real_time
        self.waiting = 0  # ready frames at the last decision: what demand looks like now

    @property
    def batch_size(self) -> int:
        raise NotImplementedError

    @property
    def calls(self) -> int:
        raise NotImplementedError

    def send_now(self, ready: int, in_flight: int, waited_s: float, stopping: bool) -> bool:
        """Whether to send a batch of the ``ready`` frames now, with ``in_flight`` calls out and the
        oldest ready frame waiting for ``waited_s``."""
        self.waiting = ready
        if not ready or in_flight >= self.calls:
            return False
        return ready >= self.batch_size or waited_s >= self.linger_s or stopping

    def shed_bound(self, waiting_streams: int) -> int:
        """Frames that may wait for a call in real time; the oldest beyond it are dropped."""
        return max(self.batch_size * self.calls, 2 * waiting_streams)

    @property
    def max_buffered(self) -> int:
        """Frames read per fetch at most (and, in keep-all mode, held at most)."""
        return self.max_batch * self.max_calls * 2

    @property
    def hold_limit(self) -> int:
        """Frames held (read but not committed) before reading stops."""
        return self.max_buffered * (REAL_TIME_HELD_FACTOR if self.real_time else 1)

    def fetch_room(self, buffered: int) -> int:
        """How many frames to read now, holding ``buffered``."""
        return min(self.hold_limit - buffered, self.max_buffered)

    def observe(self, frames: int, round_trip_s: float) -> None:
        """A call of ``frames`` frames took ``round_trip_s``."""


class FixedDispatch(Dispatch):
    """``--batch-size`` frames per call, ``--max-in-flight`` calls: it learns nothing."""

    @property
    def batch_size(self) -> int:
        return self.max_batch

    @property
    def calls(self) -> int:
        return self.max_calls


class AdaptiveDispatch(Dispatch):
    """A window of frames in flight, learnt from round trips against ``max_age_s``; see the module."""

    def __init__(self, max_batch: int, max_calls: int, linger_s: float, max_age_s: float) -> None:
        super().__init__(max_batch, max_calls, linger_s, real_time=True)
        self.target_s = ROUND_TRIP_SHARE * max_age_s
        self.max_window = float(max_batch * max_calls)
        # One frame per call to start: small batches while nothing is known, and every call it may make
        # (a smaller start made the first frames of a busy stream wait for the window to grow).
        self.window = float(min(max_calls, self.max_window))
        self.round_trip_s: float | None = None  # smoothed
        self._since_decrease = 0

    @property
    def calls(self) -> int:
        """Calls grow before batches: the server's dynamic batcher merges concurrent calls into its own
        batches anyway, and a call still queued there keeps its model instances busy while another
        call's answer is on its way back (measured: two larger calls left them idle in between)."""
        return min(self.max_calls, max(1, int(self.window)))

    @property
    def batch_size(self) -> int:
        return max(1, min(self.max_batch, int(self.window) // self.calls))

    def observe(self, frames: int, round_trip_s: float) -> None:
        self.round_trip_s = round_trip_s if self.round_trip_s is None else (
            (1 - SMOOTHING) * self.round_trip_s + SMOOTHING * round_trip_s)
        self._since_decrease += 1
        if self.round_trip_s > self.target_s:
            if self._since_decrease >= self.calls:  # once per round of calls: the last cut shows first
                self.window = max(1.0, self.window * DECREASE)
                self._since_decrease = 0
        elif self.waiting >= self.batch_size:
            self.window = min(self.max_window, self.window + 1)
