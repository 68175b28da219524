"""How `rtvi up` judges a run and what its status line says, from consumer metrics."""

from __future__ import annotations

from rtvi.local.status import judge, status_line
from rtvi.streaming.probe import PodMetrics


def _metrics(processed: int, failed: int = 0, p95_bucket: float = 0.5) -> PodMetrics:
    return PodMetrics("up", processed=processed, failed=failed, consumed=processed + 10, dropped=10,
                      buckets={p95_bucket: processed, float("inf"): processed})


def test_verdict_codes():
    assert judge(None, 0).code == 1
    assert judge(_metrics(0), 0).code == 1
    assert judge(_metrics(50, failed=2), 0).code == 1
    assert judge(_metrics(50), 0).code == 0
    met = judge(_metrics(50, p95_bucket=0.5), 1000)
    assert met.code == 0 and "met" in met.line
    missed = judge(_metrics(50, p95_bucket=2.5), 1000)
    assert missed.code == 3 and "MISSED" in missed.line


def test_status_line_rates_come_from_the_difference_between_scrapes():
    line = status_line(10, _metrics(20), _metrics(70), 5.0)
    assert "in 80 (10.0 fps)" in line and "out 70 (10.0 fps)" in line and "dropped 10" in line
