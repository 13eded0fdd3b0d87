r"""How close the train step and the forward pass come to this CPU's limit.

  .venv/bin/python benchmarks/roofline.py [--widths 64,256] \
      [--out benchmarks/results/roofline.md]

In one process (tuned allocator, like sgfan-jax's commands):

* the machine's matrix-product rate: a jitted 2048x2048 @ 2048x2048 product
  in float32, and with bfloat16 inputs accumulating in float32
  (``preferred_element_type``), best of ``--matmul_reps``;
* per width: the FLOPs per image of the real jitted train step (batch 10:
  augmentation, targets, forward, backward, RMSProp) and of the eval-mode
  forward (batch 1), from XLA's own cost analysis of the compiled
  executables; their measured time (median); the achieved GFLOP/s and its
  fraction of each matrix-product rate.

Run it on a quiet machine (nothing else running): the load average at start
and end is written into the table.
"""

import argparse
import functools
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks import timing  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import train_step  # pylint: disable=g-import-not-at-top,wrong-import-position

BATCH = train_step.BATCH
MATMUL_N = 2048


def matmul_rates(n: int, reps: int):
  """Best GFLOP/s of an n x n product in float32 and bf16 -> f32."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  key = jax.random.PRNGKey(0)
  a = jax.random.normal(key, (n, n), jnp.float32)
  b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), jnp.float32)
  f32 = jax.jit(lambda x, y: x @ y)
  bf16 = jax.jit(lambda x, y: jnp.matmul(
      x.astype(jnp.bfloat16), y.astype(jnp.bfloat16),
      preferred_element_type=jnp.float32))
  a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
  bf16_in = jax.jit(lambda x, y: jnp.matmul(
      x, y, preferred_element_type=jnp.float32))
  flops = 2.0 * n ** 3
  out = {}
  for name, fn, args in (("float32", f32, (a, b)),
                         ("bfloat16 (cast in the product)", bf16, (a, b)),
                         ("bfloat16 inputs", bf16_in, (a16, b16))):
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(reps):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*args))
      best = min(best, time.perf_counter() - t0)
    out[name] = flops / best / 1e9
  return out


def model_row(width: int, reps: int):
  """FLOPs per image (XLA cost analysis) and measured time of one width."""
  import jax  # pylint: disable=g-import-not-at-top
  from sgfan_jax import inference  # pylint: disable=g-import-not-at-top
  from sgfan_jax import train as train_lib  # pylint: disable=g-import-not-at-top

  config, state, batch, step, key = train_step.synthetic_step(width)
  compiled = step.lower(state, batch, key).compile()
  train_flops = compiled.cost_analysis()["flops"] / BATCH
  holder = [state]

  def run_step():
    holder[0], metrics = step(holder[0], batch, key)
    jax.block_until_ready(metrics["loss"])

  train_s = timing.median_time(run_step, 1, reps)
  forward = jax.jit(functools.partial(inference.predict_maps,
                                      holder[0].apply_fn))
  x = jax.numpy.zeros((1, config.model.input_size, config.model.input_size,
                       3))
  variables = train_lib.variables_of(holder[0])
  fwd_flops = forward.lower(variables, x).compile().cost_analysis()["flops"]
  fwd_s = timing.median_time(
      lambda: jax.block_until_ready(forward(variables, x)), 2, 3 * reps)
  return {"train_gflop": train_flops / 1e9, "train_img_s": BATCH / train_s,
          "train_gflops": train_flops * BATCH / train_s / 1e9,
          "fwd_gflop": fwd_flops / 1e9, "fwd_ms": fwd_s * 1e3,
          "fwd_gflops": fwd_flops / fwd_s / 1e9}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--widths", default="64,256")
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--matmul_reps", type=int, default=8)
  parser.add_argument("--matmul_n", type=int, default=MATMUL_N)
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  if os.environ.get("GLIBC_TUNABLES") is None:
    env = timing.worker_env("tuned")
    os.execve(sys.executable, [sys.executable] + sys.argv, env)
  import jax  # pylint: disable=g-import-not-at-top
  start = timing.machine()
  rates = matmul_rates(args.matmul_n, args.matmul_reps)
  rows = []
  for w in (int(v) for v in args.widths.split(",")):
    r = model_row(w, args.reps)
    rows.append((w, r))
    print(f"width {w}: {r}", flush=True)
  f32 = rates["float32"]
  bf16 = rates["bfloat16 inputs"]
  lines = [
      f"Matrix product {args.matmul_n}^3 under jit, best of "
      f"{args.matmul_reps}: " + ", ".join(
          f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()) + ".",
      "",
      "| width | train GFLOP/img | train img/s | train GFLOP/s | of f32 "
      "matmul | of bf16 matmul | fwd b1 GFLOP | fwd b1 ms | fwd GFLOP/s | "
      "of f32 matmul |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for w, r in rows:
    lines.append(
        f"| {w} | {r['train_gflop']:.2f} | {r['train_img_s']:.2f} | "
        f"{r['train_gflops']:.0f} | {100 * r['train_gflops'] / f32:.0f}% | "
        f"{100 * r['train_gflops'] / bf16:.0f}% | {r['fwd_gflop']:.2f} | "
        f"{r['fwd_ms']:.1f} | {r['fwd_gflops']:.0f} | "
        f"{100 * r['fwd_gflops'] / f32:.0f}% |")
  table = "\n".join(lines)
  print(table)
  if args.out:
    head = timing.report_header(
        "Roofline: model FLOPs vs this CPU's matrix-product rate",
        "benchmarks/roofline.py", sys.argv[1:], start,
        f"jax {jax.__version__}, float32 model, tuned allocator")
    with open(args.out, "w") as f:
      f.write(head + table + "\n")


if __name__ == "__main__":
  main()
