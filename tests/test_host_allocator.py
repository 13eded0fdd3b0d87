"""The glibc tunables: when they apply, the re-executed command, their effect.

The effect test measures what the tunables are for: a large buffer that is
allocated, filled and freed over and over (what XLA:CPU does with an
executable's temporary buffer on every call) faults its pages in every time
with glibc's defaults, and only the first time with ``TUNABLES``.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from sgfan_jax import host_allocator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
glibc_only = pytest.mark.skipif(not host_allocator.is_glibc_linux(),
                                reason="glibc malloc tunables: Linux/glibc "
                                       "only")


def test_tuned_environ_sets_tunables_once():
  tuned = lambda env, glibc=True, cpu=True: host_allocator.tuned_environ(
      env, glibc_linux=glibc, cpu_backend=cpu)
  env = tuned({"PATH": "/bin"})
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": host_allocator.TUNABLES}
  # Already set (the user's value, or the re-executed process): untouched.
  assert tuned({"GLIBC_TUNABLES": "glibc.malloc.check=0"}) is None
  assert tuned(env) is None
  # Opted out, not glibc, or JAX not on the CPU.
  for off in ("0", "false", "No"):
    assert tuned({"SGFAN_TUNE_MALLOC": off}) is None
  assert tuned({"SGFAN_TUNE_MALLOC": "1"}) is not None
  assert tuned({}, glibc=False) is None
  assert tuned({}, cpu=False) is None


def test_expects_cpu_backend_from_environment_and_plugins():
  def finder(*installed):
    return lambda name: object() if name in installed else None

  no_plugin, cuda = finder(), finder("jax_cuda12_plugin")
  expects = host_allocator.expects_cpu_backend
  # No platform named: an installed accelerator plugin decides.
  assert expects({}, no_plugin)
  for plugin in host_allocator.ACCELERATOR_PLUGINS:
    assert not expects({}, finder(plugin)), plugin
  assert not expects({"JAX_PLATFORMS": " "}, cuda)       # empty = unset
  # JAX_PLATFORMS / JAX_PLATFORM_NAME name it (first entry = default).
  assert expects({"JAX_PLATFORMS": "cpu"}, cuda)
  assert expects({"JAX_PLATFORMS": "CPU,cuda"}, cuda)
  assert not expects({"JAX_PLATFORMS": "cuda,cpu"}, no_plugin)
  assert not expects({"JAX_PLATFORMS": "tpu"}, no_plugin)
  assert expects({"JAX_PLATFORM_NAME": "cpu"}, cuda)
  assert not expects({"JAX_PLATFORM_NAME": "gpu"}, no_plugin)
  assert expects({"JAX_PLATFORMS": "cpu", "JAX_PLATFORM_NAME": "gpu"},
                 no_plugin)                              # JAX_PLATFORMS first

  def broken(name):
    raise ValueError(f"{name}.__spec__ is None")

  assert expects({}, broken)                             # unreadable = absent


def test_expects_cpu_backend_imports_neither_jax_nor_plugins():
  # The module file alone (the sgfan_jax package's __init__ is not this
  # module's doing).
  code = textwrap.dedent("""
      import importlib.util, sys
      spec = importlib.util.spec_from_file_location("host_allocator", %r)
      host_allocator = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(host_allocator)
      host_allocator.expects_cpu_backend({})
      loaded = set(host_allocator.ACCELERATOR_PLUGINS) | {"jax", "jaxlib"}
      print(sorted(loaded & set(sys.modules)))
      """ % host_allocator.__file__)
  out = subprocess.run([sys.executable, "-c", code], check=True,
                       capture_output=True, text=True, timeout=60).stdout
  assert out.split() == ["[]"]


def test_reexec_command_keeps_module_and_options():
  prog, args = host_allocator.reexec_command(
      "/venv/bin/python", ["python3", "-X", "dev", "-m", "sgfan_jax.predict",
                           "--workdir", "w", "a.jpg"],
      ["/repo/sgfan_jax/predict.py", "--workdir", "w", "a.jpg"])
  assert prog == "/venv/bin/python"
  assert args == ["/venv/bin/python", "-X", "dev", "-m", "sgfan_jax.predict",
                  "--workdir", "w", "a.jpg"]
  # Without orig_argv (Python < 3.10): the script and its arguments.
  _, args = host_allocator.reexec_command("/py", [], ["main.py", "--x=1"])
  assert args == ["/py", "main.py", "--x=1"]


@glibc_only
def test_reexec_runs_the_command_again_with_the_tunables():
  code = textwrap.dedent("""
      import os, sys
      sys.path.insert(0, %r)
      print("start", flush=True)
      from sgfan_jax import host_allocator
      host_allocator.reexec_with_tuned_allocator()
      print("tunables", os.environ.get("GLIBC_TUNABLES"))
      """ % REPO)
  env = {k: v for k, v in os.environ.items()
         if k not in ("GLIBC_TUNABLES", "SGFAN_TUNE_MALLOC",
                      "JAX_PLATFORM_NAME")}
  env["JAX_PLATFORMS"] = "cpu"
  out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                       capture_output=True, text=True, timeout=60).stdout
  assert out.splitlines() == ["start", "start",
                              "tunables " + host_allocator.TUNABLES]
  # JAX on an accelerator: runs once, environment unchanged (before JAX is
  # imported: the script never imports it).
  out = subprocess.run([sys.executable, "-c", code],
                       env=dict(env, JAX_PLATFORMS="cuda"), check=True,
                       capture_output=True, text=True, timeout=60).stdout
  assert out.splitlines() == ["start", "tunables None"]
  # Opted out: runs once, environment unchanged.
  env["SGFAN_TUNE_MALLOC"] = "0"
  out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                       capture_output=True, text=True, timeout=60).stdout
  assert out.splitlines() == ["start", "tunables None"]


_FAULTS = textwrap.dedent("""
    import ctypes, resource, sys
    sys.path.insert(0, %r)
    from sgfan_jax import host_allocator
    if sys.argv[1] == "mallopt":
      assert host_allocator.tune_in_process()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 48 << 20          # above glibc's 32 MiB mmap ceiling
    def faults():
      return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    # Warm-up: the first allocation may fault in either setting.
    p = libc.malloc(size); ctypes.memset(p, 1, size); libc.free(p)
    before = faults()
    for _ in range(5):
      p = libc.malloc(size); ctypes.memset(p, 1, size); libc.free(p)
    print(faults() - before)
    """)


def _faults(mode, tunables):
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  if tunables:
    env["GLIBC_TUNABLES"] = tunables
  out = subprocess.run([sys.executable, "-c", _FAULTS % REPO, mode], env=env,
                       check=True, capture_output=True, text=True,
                       timeout=60).stdout
  return int(out.split()[-1])


@glibc_only
def test_tunables_stop_refaulting_a_reused_buffer():
  pages = 5 * (48 << 20) // 4096          # 61,440 pages of 4 KiB
  default = _faults("plain", None)
  tuned = _faults("plain", host_allocator.TUNABLES)
  in_process = _faults("mallopt", None)
  # glibc defaults: mmap + munmap each time, every page faults again.
  assert default > 0.9 * pages, default
  # Tuned: the freed block is reused, already mapped.
  assert tuned < 0.01 * pages, tuned
  assert in_process < 0.01 * pages, in_process
