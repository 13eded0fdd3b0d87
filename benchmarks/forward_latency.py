"""Forward latency (eval mode, jitted) per conv implementation and width.

  python benchmarks/forward_latency.py [--widths 64 128 256] [--batch 1]

Prints median milliseconds over repeats after warm-up. A quick check for
choosing the forward-pass convolution; the full tables are made by
benchmarks/train_step.py and benchmarks/vs_pytorch.py.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from sgfan_jax import host_allocator  # pylint: disable=g-import-not-at-top,wrong-import-position
from sgfan_jax import model as model_lib  # pylint: disable=g-import-not-at-top,wrong-import-position


def time_forward(width, impl, batch, repeats):
  m = model_lib.SGFAN(width=width, conv_impl=impl)
  x = jnp.asarray(np.random.default_rng(0).normal(
      size=(batch, 128, 128, 3)).astype(np.float32))
  v = m.init(jax.random.PRNGKey(0), x[:1])
  f = jax.jit(lambda v, x: m.apply(v, x, train=False))
  jax.block_until_ready(f(v, x))
  jax.block_until_ready(f(v, x))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(f(v, x))
    times.append(time.perf_counter() - t)
  return 1e3 * float(np.median(times))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256])
  p.add_argument("--impls", nargs="+", default=["xla", "cpu"])
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--repeats", type=int, default=15)
  a = p.parse_args()
  print("| width | " + " | ".join(f"{i} ms" for i in a.impls) + " |")
  print("|---|" + "---|" * len(a.impls))
  for w in a.widths:
    row = [time_forward(w, i, a.batch, a.repeats) for i in a.impls]
    print(f"| {w} | " + " | ".join(f"{r:.1f}" for r in row) + " |",
          flush=True)


if __name__ == "__main__":
  # The allocator setting of sgfan-jax's commands (GLIBC_TUNABLES already
  # set, e.g. to "", keeps the caller's).
  host_allocator.reexec_with_tuned_allocator()
  main()
