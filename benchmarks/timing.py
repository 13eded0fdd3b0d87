"""Timing, machine-description and environment helpers shared by the
benchmark scripts."""

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


# Worker malloc settings: 'tuned' = ``host_allocator.TUNABLES`` (what
# sgfan-jax's commands run with), 'default' = glibc's own.
ALLOCATORS = ("tuned", "default")


def worker_env(allocator: str) -> dict:
  """This process's environment with the worker's glibc malloc setting."""
  from sgfan_jax import host_allocator  # pylint: disable=g-import-not-at-top
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  if allocator == "tuned":
    env["GLIBC_TUNABLES"] = host_allocator.TUNABLES
  elif allocator != "default":
    raise ValueError(f"allocator must be one of {ALLOCATORS}")
  return env


def report_header(title: str, script: str, argv, machine_at_start: dict,
                  versions: str) -> str:
  """Markdown head of a result file: title, exact command, machine line.

  ``versions`` ends the machine line (library versions, settings); the load
  average at the end is read now.
  """
  end_load = " ".join(f"{v:.2f}" for v in os.getloadavg())
  m = machine_at_start
  return (f"# {title}\n\nCommand:\n\n```\n.venv/bin/python {script} "
          + " ".join(argv) + "\n```\n\n"
          f"Machine: {m['cpu']}, nproc={m['nproc']}, load average at start "
          f"{m['load']}, at end {end_load}; {versions}.\n\n")


def write_markdown(path: str, text: str) -> None:
  """Writes a result file (its folder created) and prints it."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)
  print(text)
