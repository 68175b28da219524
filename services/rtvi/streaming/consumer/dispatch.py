"""When to send a batch, how large, how many calls at once, and how much to hold: pure policy.

The event loop (``loop``) asks; this module only answers, from numbers it is given (no
clock, no Kafka, no gRPC: the caller passes the time), so every rule is unit-tested
in-process.

Two policies share the rules of ``Dispatch``:

* ``FixedDispatch``: always ``--batch-size`` frames per call and ``--max-in-flight`` calls
  (keep-all mode, where throughput is all that counts, and ``--dispatch fixed``).
* ``AdaptiveDispatch`` (real time, the default there): the flags become upper bounds, and the
  window of frames in flight is the smallest that still delivers (nearly) the most frames per
  second, found by hill climbing on the delivery rate it measures. Every few measurements it
  tries a larger or a smaller window for one measurement, and keeps it if the larger one
  delivered clearly more (a server that batches better with more frames waiting) or the
  smaller one about as much (the frames it no longer sends only queued at the server, adding
  latency and no throughput). Each try is compared with measurements just before it, so a
  machine whose speed drifts does not fool it. The round trip stays within ROUND_TRIP_SHARE
  times the age bound whatever the rate says. Below capacity the window is never the limit,
  nothing is learnt and it stays where it is, so a burst finds every call it may make.
  (An AIMD window that grew until the round trip reached that cap came first: on an AVX2-only
  EPYC it queued frames at the server for 300-400 ms without adding throughput.)
"""

from __future__ import annotations

# Real time reads on while frames are dropped; frames held behind one still in flight
# (in order, for the commit) are bounded at this many times the ready buffer.
REAL_TIME_HELD_FACTOR = 16
# Adaptive: the smoothed round trip may reach this multiple of the age bound, never more: a frame
# sent just within the bound then arrives within it plus a round trip. Measured at twice the capacity
# of a Zen 4 (benchmarks/bench_latency.py): a cap of 0.5 or 1.0 bound kept the window too small for
# that server to batch well (49-87% of keep-all's throughput), 2.0 matched keep-all.
ROUND_TRIP_SHARE = 2.0
DECREASE = 0.9  # the window's cut while the round trip is past its cap: a small step keeps it steady
SMOOTHING = 0.2  # weight of the newest round trip in the moving average
# A measurement of the delivery rate spans at least this many frames and a window's worth: fewer
# are a batch or two, whose timing says more about where a batch happened to end than about the rate.
SAMPLE_FRAMES = 32
# A try is a window this much larger or smaller. With GAIN it sets how flat the rate must get
# before the window stops growing: a step of 1.5 that must pay 10% stops where 1% more frames in
# flight buys under 0.24% more throughput, so a server that batches better with more frames is
# given most of what it can use. Each try that does not pay halves the step's excess over 1, down to
# MIN_STEP (GAIN and LOSS shrink with it): once the window has settled, a try raises the round
# trip by a quarter instead of a half for its few seconds (the p99's tail at 2x an AVX2-only EPYC's
# capacity was frames sent during such tries). A try that pays restores STEP.
STEP = 1.5
MIN_STEP = 1.25
# A larger window is kept if it delivered GAIN more than the measurement before it; a smaller one if
# it delivered at most LOSS less than the best of the last BEST_OF base measurements (against the one
# before it alone, smaller windows that each cost a little were kept one after another: 83% of
# keep-all's throughput at 1.5x the capacity of an AVX2-only EPYC). One measurement's rate varies by
# about 10% on a busy 2-core machine: a smaller GAIN kept larger windows by chance.
GAIN = 0.10
LOSS = 0.05
BEST_OF = 4
# After a try that did not pay, this many more measurements on the base window before the next,
# doubling while tries keep failing (the window is then where it belongs), up to MAX_HOLD: a try
# below the best window costs throughput while it lasts.
MAX_HOLD = 8


class Dispatch:
    """The rules both policies share; ``batch_size`` and ``calls`` are theirs to choose.

    * A batch goes out when a full one is ready, when the oldest ready frame has waited
      ``linger_s`` (then smaller), or while stopping; never more than ``calls`` calls at once.
    * Keep-all holds at most two rounds of calls at the flags' sizes and then reads nothing;
      real time reads on, holding up to REAL_TIME_HELD_FACTOR times that.
    * Real time sheds what the next two calls cannot take: past ``2 x batch_size`` waiting
      frames (at least two per waiting stream: with one, a stream whose queue empties at every
      call lost its turn in the round-robin, fairness 0.80) the oldest of the longest stream goes.
    """

    def __init__(self, max_batch: int, max_calls: int, linger_s: float, real_time: bool) -> None:
        self.max_batch = max_batch
        self.max_calls = max_calls
        self.linger_s = linger_s
        self.real_time = real_time
        self.limited = False  # frames waited for a call since the policy last looked: it was the limit

    @property
    def batch_size(self) -> int:
        raise NotImplementedError

    @property
    def calls(self) -> int:
        raise NotImplementedError

    def send_now(self, ready: int, in_flight: int, waited_s: float, stopping: bool) -> bool:
        """Whether to send a batch of the ``ready`` frames now, with ``in_flight`` calls out and the
        oldest ready frame waiting for ``waited_s``."""
        if ready and in_flight >= self.calls:
            self.limited = True
        if not ready or in_flight >= self.calls:
            return False
        return ready >= self.batch_size or waited_s >= self.linger_s or stopping

    def shed_bound(self, waiting_streams: int) -> int:
        """Frames that may wait for a call in real time; the oldest beyond it are dropped."""
        return max(2 * self.batch_size, 2 * waiting_streams)

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

    def observe(self, frames: int, round_trip_s: float, now: float) -> None:
        """A call of ``frames`` frames took ``round_trip_s`` and returned at ``now`` (monotonic seconds)."""


class FixedDispatch(Dispatch):
    """``--batch-size`` frames per call, ``--max-in-flight`` calls: it learns nothing."""

    @property
    def batch_size(self) -> int:
        return self.max_batch

    @property
    def calls(self) -> int:
        return self.max_calls


class AdaptiveDispatch(Dispatch):
    """A window of frames in flight, learnt by hill climbing on the delivery rate; see the module."""

    def __init__(self, max_batch: int, max_calls: int, linger_s: float, max_age_s: float) -> None:
        super().__init__(max_batch, max_calls, linger_s, real_time=True)
        self.target_s = ROUND_TRIP_SHARE * max_age_s
        self.max_window = max_batch * max_calls
        # One frame per call it may make: small batches while nothing is known, yet every call (a
        # smaller start made the first frames of a busy stream wait for the window to grow).
        self.window = min(max_calls, self.max_window)
        self.round_trip_s: float | None = None  # smoothed
        self._since_decrease = 0
        self._climb = _HillClimb()
        self._started: float | None = None  # the current measurement's start
        self._frames = 0  # frames delivered since then

    @property
    def batch_size(self) -> int:
        """The smallest batch that fits the window in the calls allowed: calls grow before batches, as
        the server's dynamic batcher merges concurrent calls into its own batches anyway, and a call
        still queued there keeps its model instances busy while another's answer is on its way back."""
        return min(self.max_batch, -(-self.window // self.max_calls))

    @property
    def calls(self) -> int:
        return min(self.max_calls, -(-self.window // self.batch_size))

    def observe(self, frames: int, round_trip_s: float, now: float) -> None:
        self.round_trip_s = round_trip_s if self.round_trip_s is None else (
            (1 - SMOOTHING) * self.round_trip_s + SMOOTHING * round_trip_s)
        self._since_decrease += 1
        if self.round_trip_s > self.target_s:
            if self._since_decrease >= self.calls:  # once per round of calls: the last cut shows first
                self.window = max(1, min(self.window - 1, round(self.window * DECREASE)))
                self._since_decrease = 0
                self._climb.restart(self.window)
                self._started = None
            return
        if self._started is None:  # the first call after a start or a cut: measure from here
            self._started, self._frames, self.limited = now, 0, False
            return
        self._frames += frames
        # settling: only the calls sent under the old window need to return
        if self._frames < (self.window if self._climb.settling else max(SAMPLE_FRAMES, self.window)) \
                or now <= self._started:
            return
        rate = self._frames / (now - self._started)
        self._started, self._frames = now, 0
        # As large as the round trip's cap allows, if the round trip grows in proportion (a busy server)
        largest = min(self.max_window, int(self.window * self.target_s / self.round_trip_s))
        step = self._climb.step
        larger = max(self.window, min(largest, max(self.window + 1, round(self.window * step))))
        self.window = self._climb.measured(rate, self.limited, self.window, larger,
                                           max(1, min(self.window - 1, round(self.window / step))))
        self.limited = False


class _HillClimb:
    """Which window to run next, from delivery rates measured one after another.

    A cycle of four measurements: the first after a change is discarded (calls sent under the
    old window still return in it), the second is the base, the third is discarded again and
    the fourth is the try, a larger or smaller window. A try that pays is kept and the next goes
    the same way; one that does not is undone, the step shrinks (MIN_STEP), and the next try
    goes the other way after a hold on the base that doubles with every failure in a row
    (MAX_HOLD). A measurement in which the window was never the limit (frames did not wait for
    a call) says nothing about it: the cycle restarts on the base window.
    """

    def __init__(self) -> None:
        self.phase = 0
        self.upward = True
        self.base_window = 0
        self.bases: list[float] = []  # the last BEST_OF base rates, the newest last
        self.failures = 0  # tries in a row that did not pay
        self.hold = 0  # base measurements left before the next try

    @property
    def step(self) -> float:
        """STEP, its excess over 1 halved by every try in a row that did not pay, at least MIN_STEP."""
        return max(MIN_STEP, 1 + (STEP - 1) / 2 ** self.failures)

    @property
    def settling(self) -> bool:
        """Whether the current measurement is one discarded after a change of window."""
        return self.phase in (0, 2)

    def restart(self, window: int) -> None:
        self.phase, self.base_window = 0, window

    def measured(self, rate: float, limited: bool, window: int, larger: int, smaller: int) -> int:
        """The window to use next, after one measurement of ``rate`` (frames/s) at ``window``;
        ``larger`` and ``smaller`` are the tries allowed from there (equal to it where none is)."""
        if self.settling and limited:
            self.phase += 1
            return window
        if not limited:
            window = self.base_window if self.phase >= 2 else window
            self.restart(window)
            return window
        if self.phase == 1:
            self.base_window = window
            self.bases = (self.bases + [rate])[-BEST_OF:]
            if self.hold:
                self.hold -= 1
                return window
            trial = larger if self.upward else smaller
            if trial == window:
                self.upward = not self.upward
                trial = larger if self.upward else smaller
            self.phase = 2 if trial != window else 0
            return trial
        share = (self.step - 1) / (STEP - 1)  # of GAIN and LOSS, for a smaller step
        if rate >= (self.bases[-1] * (1 + GAIN * share) if self.upward else max(self.bases) * (1 - LOSS * share)):
            self.failures = 0
        else:
            self.upward = not self.upward
            window = self.base_window
            self.failures += 1
            self.hold = min(MAX_HOLD, 2 ** self.failures)
        self.restart(window)
        return window
