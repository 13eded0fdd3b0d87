"""Timing helper shared by the benchmark scripts."""

import statistics
import time


def median_time(fn, warmup: int, repeats: int) -> float:
  """Median wall time (s) of ``fn()`` over ``repeats`` after ``warmup`` calls."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)
