r"""How close the train step and the forward pass come to this CPU's limit.

  .venv/bin/python benchmarks/roofline.py [--widths 64,256] \
      [--dtypes float32,bfloat16] [--cpu_kernels kxk=im2col] \
      [--out benchmarks/results/roofline.md]

In one process (tuned allocator, like sgfan-jax's commands):

* the machine's matrix-product rate: a jitted 2048x2048 @ 2048x2048 product
  in float32, and with bfloat16 inputs accumulating in float32
  (``preferred_element_type``), best of ``--matmul_reps``;
* per width and compute dtype (``--dtypes``, config.model.dtype): the
  FLOPs per image of the real jitted train step (batch 10: augmentation,
  targets, forward, backward, RMSProp) and of the eval-mode forward (batch
  1), from XLA's own cost analysis of the compiled executables; their
  measured time (median); the achieved GFLOP/s and its fraction of the
  matrix-product rate of its precision (float32 rows: the float32 rate;
  bfloat16 rows: the bfloat16-inputs rate), and of the float32 rate.
  ``--cpu_kernels``: bfloat16 CPU_KERNELS overrides, as in
  benchmarks/train_step.py.

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
# The matrix-product rate (matmul_rates key) each compute dtype is held to.
PRECISION_RATE = {"float32": "float32", "bfloat16": "bfloat16 inputs"}


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


def model_row(width: int, reps: int, dtype: str = "float32"):
  """FLOPs per image (XLA cost analysis) and measured time of one width."""
  import jax  # pylint: disable=g-import-not-at-top
  from sgfan_jax import inference  # pylint: disable=g-import-not-at-top
  from sgfan_jax import train as train_lib  # pylint: disable=g-import-not-at-top

  config, state, batch, step, key = train_step.synthetic_step(
      width, dtype=dtype)
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
  train_step.add_dtype_flags(parser)
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  dtypes = args.dtypes.split(",")
  for d in dtypes:
    if d not in PRECISION_RATE:
      raise ValueError(f"--dtypes: {d!r} is not one of {list(PRECISION_RATE)}")
  if os.environ.get("GLIBC_TUNABLES") is None:
    env = timing.worker_env("tuned")
    os.execve(sys.executable, [sys.executable] + sys.argv, env)
  import jax  # pylint: disable=g-import-not-at-top
  start = timing.machine()
  train_step.set_cpu_kernels(args.cpu_kernels)
  rates = matmul_rates(args.matmul_n, args.matmul_reps)
  rows = []
  for i, w in enumerate(int(v) for v in args.widths.split(",")):
    for d in (dtypes if i % 2 == 0 else dtypes[::-1]):   # alternate order
      r = model_row(w, args.reps, d)
      rows.append((w, d, r))
      print(f"width {w} {d}: {r}", flush=True)
  rows.sort(key=lambda t: (t[0], dtypes.index(t[1])))
  f32 = rates["float32"]
  lines = [
      f"Matrix product {args.matmul_n}^3 under jit, best of "
      f"{args.matmul_reps}: " + ", ".join(
          f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()) + ".",
      "",
      "| width | dtype | train GFLOP/img | train img/s | train GFLOP/s | "
      "of its matmul rate | of f32 matmul | fwd b1 GFLOP | fwd b1 ms | "
      "fwd GFLOP/s | of its matmul rate | of f32 matmul |",
      "|" + " --- |" * 12]
  for w, d, r in rows:
    own = rates[PRECISION_RATE[d]]
    lines.append(
        f"| {w} | {d} | {r['train_gflop']:.2f} | {r['train_img_s']:.2f} | "
        f"{r['train_gflops']:.0f} | {100 * r['train_gflops'] / own:.0f}% | "
        f"{100 * r['train_gflops'] / f32:.0f}% | {r['fwd_gflop']:.2f} | "
        f"{r['fwd_ms']:.1f} | {r['fwd_gflops']:.0f} | "
        f"{100 * r['fwd_gflops'] / own:.0f}% | "
        f"{100 * r['fwd_gflops'] / f32:.0f}% |")
  lines += ["", "Its matmul rate: float32 rows the float32 product, "
            "bfloat16 rows the product of bfloat16 inputs with float32 "
            "accumulation. FLOPs are XLA's cost analysis of the compiled "
            "step (it counts elementwise work too, so the two dtypes differ "
            "slightly)."]
  table = "\n".join(lines)
  print(table)
  if args.out:
    head = timing.report_header(
        "Roofline: model FLOPs vs this CPU's matrix-product rate",
        "benchmarks/roofline.py", sys.argv[1:], start,
        f"jax {jax.__version__}, model dtypes {','.join(dtypes)}, tuned "
        "allocator" + (f", bfloat16 CPU_KERNELS overrides {args.cpu_kernels}"
                       if args.cpu_kernels else ""))
    with open(args.out, "w") as f:
      f.write(head + table + "\n")


if __name__ == "__main__":
  main()
