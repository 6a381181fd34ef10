"""Small statistics used by the metrics view and the benchmarks: exact percentiles of a
list, and percentiles estimated from a bounded log-scale histogram."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BUCKETS_PER_DOUBLING",
    "HistogramBucket",
    "bucket_of",
    "histogram_percentile",
    "percentile",
]

BUCKETS_PER_DOUBLING = 16
"""Histogram resolution: a bucket's upper bound is 2 ** (1/16), about 1.044 times its lower
bound, so a value estimated inside a bucket is within 4.4 % of the true one."""
_SMALLEST = 2.0**-20
"""Values at or below this (and negative ones) share the lowest bucket."""
_LOWEST_BUCKET = math.floor(math.log2(_SMALLEST) * BUCKETS_PER_DOUBLING) - 1


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    _check(q)
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    return float(ordered[low] + (ordered[high] - ordered[low]) * fraction)


@dataclass(frozen=True, kw_only=True)
class HistogramBucket:
    """One non-empty bucket of a histogram."""

    count: int
    """Values in the bucket."""
    low: float
    """The smallest of them."""
    high: float
    """The largest of them."""


def bucket_of(value: float) -> int:
    """The histogram bucket of a finite value: `floor(log2(value) * BUCKETS_PER_DOUBLING)`,
    one bucket for everything at or below 2 ** -20. Buckets are ordered like their values;
    about 1,000 of them cover 1 ns to a year in milliseconds."""
    if not math.isfinite(value):
        raise ValueError(f"a histogram holds finite values, got {value}")
    if value <= _SMALLEST:
        return _LOWEST_BUCKET
    return max(_LOWEST_BUCKET + 1, math.floor(math.log2(value) * BUCKETS_PER_DOUBLING))


def histogram_percentile(buckets: Sequence[HistogramBucket], q: float) -> float | None:
    """`percentile` of the values a histogram counts (its buckets in bucket order), None
    when it is empty.

    The two order statistics `percentile` interpolates between are estimated inside their
    buckets: a bucket's values are taken as spread evenly from its smallest to its largest,
    so a bucket's extremes (and every value of a bucket holding one distinct value) are
    exact, and any other estimate is within the bucket's width (4.4 %) of the true value.
    The cost depends on the number of buckets, never on the number of values.
    """
    total = sum(bucket.count for bucket in buckets)
    if total == 0:
        return None
    _check(q)
    rank = (total - 1) * q / 100
    low = int(rank)
    high = min(low + 1, total - 1)
    first, second = _order_statistic(buckets, low), _order_statistic(buckets, high)
    return float(first + (second - first) * (rank - low))


def _order_statistic(buckets: Sequence[HistogramBucket], k: int) -> float:
    """An estimate of the k-th smallest value (from 0)."""
    seen = 0
    for bucket in buckets:
        if k < seen + bucket.count:
            if bucket.count == 1:
                return bucket.low
            return bucket.low + (bucket.high - bucket.low) * (k - seen) / (bucket.count - 1)
        seen += bucket.count
    raise IndexError(f"the histogram holds {seen} values; there is no value {k}")


def _check(q: float) -> None:
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
