"""glibc malloc settings that stop XLA:CPU page-faulting its buffers each call.

Why. XLA:CPU allocates an executable's temporary buffer with ``malloc`` on
every call and frees it afterwards: 2.3 GB for a width-128 train step at
batch 10, 32 MB for a batch-1 forward. glibc serves blocks that large with a
fresh ``mmap`` (above its 32 MiB mmap ceiling, and always above 64 MiB when
the calling thread has its own arena, as XLA's worker threads do), and
``munmap``s them on free, so every call faults the whole buffer back in,
4 KiB at a time: measured here 611k faults (2.4 GB) per width-128 train
step and 8k faults per batch-1 forward (their cost in step time:
BENCHMARKS.md). PyTorch's eager allocator goes through the same ``malloc``
and pays the same way.

The fix is three glibc tunables (``TUNABLES``):

* ``glibc.malloc.hugetlb=1``: malloc marks its mappings ``MADV_HUGEPAGE``, so
  where transparent huge pages are 'madvise' or 'always' (the Linux default)
  a fresh buffer faults in 2 MiB at a time (512x fewer faults);
* ``glibc.malloc.mmap_max=0`` and ``glibc.malloc.trim_threshold`` (1 TB):
  blocks from the main arena come from the heap and stay mapped after
  ``free``, so the next call reuses them without faulting.

Peak memory does not change (benchmarks/results/vs_pytorch.md); memory
freed by the process is kept for reuse instead of being returned to the OS.

glibc reads tunables only at process start, so the command-line entry
points (``main.py``, ``python -m sgfan_jax.predict``, ``python -m
sgfan_jax.demo``) call ``reexec_with_tuned_allocator()`` first: on Linux
with glibc, when JAX will run on the CPU, unless ``GLIBC_TUNABLES`` is
already set or ``SGFAN_TUNE_MALLOC=0``, it re-executes the same command once
with the variable set.

The backend is decided before JAX is imported (initialising JAX to ask it
would be work thrown away by the re-execution), by
:func:`expects_cpu_backend`: ``JAX_PLATFORMS`` (else the older
``JAX_PLATFORM_NAME``), when set, names it (its first entry); otherwise JAX
picks an accelerator when an accelerator plugin is installed
(``jax_cuda12_plugin``, ``jax_cuda13_plugin``, any ``jax_plugins``
namespace package, ``libtpu``), which :func:`importlib.util.find_spec`
sees without importing it. On a machine with such a plugin but no device,
JAX falls back to the CPU and the command runs untuned; set
``JAX_PLATFORMS=cpu`` there to get the tuning. On an accelerator the host
allocator is not on the hot path and keeping freed host memory mapped would
only raise the process's footprint, so nothing is changed there.

In your own scripts, start Python with
``GLIBC_TUNABLES=$(python -m sgfan_jax.host_allocator)`` to get the same.
In a notebook whose kernel is already running, ``tune_in_process()`` sets
the two heap tunables with ``mallopt`` (no huge pages): that removes the
faults of buffers up to 64 MiB (a batch-1 forward pass) but not of the
gigabyte train-step buffers, which XLA's worker threads allocate outside
glibc's main heap. Nothing here changes any result, only where buffers live.
"""

import ctypes
import ctypes.util
import importlib.util
import os
import platform
import sys
from typing import Callable, List, Mapping, Optional, Tuple

ENV_VAR = "GLIBC_TUNABLES"
OPT_OUT_VAR = "SGFAN_TUNE_MALLOC"   # "0" disables the re-exec
TUNABLES = ("glibc.malloc.hugetlb=1:glibc.malloc.mmap_max=0:"
            "glibc.malloc.trim_threshold=1000000000000")
# JAX's platform choice, highest priority first (JAX_PLATFORM_NAME: older).
PLATFORM_VARS = ("JAX_PLATFORMS", "JAX_PLATFORM_NAME")
# Installed, any of these makes JAX's default backend an accelerator.
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin",
                       "jax_plugins", "libtpu")


def is_glibc_linux() -> bool:
  """True on Linux with glibc (where the tunables exist)."""
  return (sys.platform.startswith("linux")
          and platform.libc_ver()[0] == "glibc")


def _installed(module: str,
               find_spec: Callable[[str], object]) -> bool:
  try:
    return find_spec(module) is not None
  except (ImportError, ValueError):   # e.g. a broken namespace package
    return False


def expects_cpu_backend(
    environ: Mapping[str, str],
    find_spec: Callable[[str], object] = importlib.util.find_spec) -> bool:
  """True when JAX's default backend will be the CPU (JAX not imported).

  The first non-empty of ``PLATFORM_VARS`` decides by its first entry
  (``JAX_PLATFORMS=cpu`` -> True, ``cuda,cpu`` -> False); without one, True
  unless a module of ``ACCELERATOR_PLUGINS`` is installed (``find_spec``
  finds it). See the module docstring.
  """
  for var in PLATFORM_VARS:
    value = environ.get(var, "").strip()
    if value:
      return value.split(",")[0].strip().lower() == "cpu"
  return not any(_installed(m, find_spec) for m in ACCELERATOR_PLUGINS)


def tuned_environ(environ: Mapping[str, str], glibc_linux: bool,
                  cpu_backend: bool) -> Optional[dict]:
  """The environment to re-execute with, or None to run as is.

  None when not on glibc Linux, when JAX will not run on the CPU
  (``cpu_backend``, see :func:`expects_cpu_backend`), when the user opted
  out (``SGFAN_TUNE_MALLOC=0``), or when ``GLIBC_TUNABLES`` is already set
  (the user's own setting, or the re-executed process itself).
  """
  if not glibc_linux or not cpu_backend:
    return None
  if environ.get(OPT_OUT_VAR, "1").strip().lower() in ("0", "false", "no"):
    return None
  if ENV_VAR in environ:
    return None
  env = dict(environ)
  env[ENV_VAR] = TUNABLES
  return env


def reexec_command(executable: str, orig_argv: List[str],
                   argv: List[str]) -> Tuple[str, List[str]]:
  """(program, argv) that re-run the current command.

  ``sys.orig_argv`` keeps interpreter options and ``-m module`` (which
  ``sys.argv`` loses); ``executable`` replaces its first element so the same
  interpreter (venv) runs.
  """
  if orig_argv:
    return executable, [executable] + list(orig_argv[1:])
  return executable, [executable] + list(argv)


def reexec_with_tuned_allocator() -> None:
  """Re-executes this process once with ``TUNABLES`` (see module doc).

  Call it first thing in a command's ``main``; returns only when no
  re-execution is needed (or possible).
  """
  env = tuned_environ(os.environ, is_glibc_linux(),
                      expects_cpu_backend(os.environ))
  if env is None:
    return
  program, args = reexec_command(sys.executable,
                                 getattr(sys, "orig_argv", []), sys.argv)
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(program, args, env)
  except OSError as e:  # e.g. a frozen or sandboxed interpreter
    print(f"sgfan_jax: could not re-execute with {ENV_VAR} ({e}); "
          "running with the default allocator", file=sys.stderr)


# mallopt(3) parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def tune_in_process() -> bool:
  """``mallopt`` version of mmap_max=0 and no trimming, for a live process.

  Returns True when both calls succeeded (glibc Linux), else False.
  """
  if not is_glibc_linux():
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  except OSError:
    return False
  ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
  # -1 disables trimming (mallopt(3): "Setting M_TRIM_THRESHOLD to -1
  # disables trimming completely").
  ok = libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1 and ok
  return ok


if __name__ == "__main__":
  # ``GLIBC_TUNABLES=$(python -m sgfan_jax.host_allocator) python ...``
  print(TUNABLES)
