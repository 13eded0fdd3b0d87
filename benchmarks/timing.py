"""Timing and machine-description helpers shared by the benchmark scripts."""

import os
import platform
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


def machine() -> dict:
  """CPU model, core count and load average, for the result tables."""
  cpu = platform.processor() or "?"
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  return {"cpu": cpu, "nproc": os.cpu_count(),
          "load": " ".join(f"{v:.2f}" for v in os.getloadavg())}
