r"""Stock 3x3 convolutions under XLA:CPU's library flags, float32 and bfloat16.

  .venv/bin/python benchmarks/xla_flags_conv.py \
      [--out benchmarks/results/xla_flags_conv.md]

Whether an XLA:CPU flag gives the stock convolution a fast bfloat16 path
(oneDNN, XNNPACK): for two shapes of SGFAN's hourglass (batch 10, 64x64,
128 and 32 channels, 3x3, padding 1), the forward and the forward + both
gradients (of ``sum(y**2)``) under jit, in float32, with bfloat16 operands
and a float32 result (``preferred_element_type``), and all-bfloat16; median
of 5 after one call. Each flag setting runs in a fresh subprocess
(``XLA_FLAGS`` is read at start-up) with the tuned allocator.
"""

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks import timing  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAG_SETS = ("", "--xla_cpu_use_onednn=true",
             "--xla_cpu_experimental_onednn_custom_call=true",
             "--xla_cpu_use_xnnpack=true")
SHAPES = ((64, 128), (64, 32))        # (spatial side, channels in = out)
DTYPES = ("f32", "bf16->f32", "bf16->bf16")


def worker():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top

  kinds = {"f32": (jnp.float32, None), "bf16->f32": (jnp.bfloat16,
                                                    jnp.float32),
           "bf16->bf16": (jnp.bfloat16, None)}
  out = {}
  for side, c in SHAPES:
    x = jax.random.normal(jax.random.PRNGKey(0), (10, side, side, c))
    k = 0.05 * jax.random.normal(jax.random.PRNGKey(1), (3, 3, c, c))
    for name in DTYPES:
      dt, pe = kinds[name]

      def conv(x, k, pe=pe):
        return lax.conv_general_dilated(
            x, k, (1, 1), ((1, 1), (1, 1)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            preferred_element_type=pe)

      fwd = jax.jit(conv)
      grad = jax.jit(jax.grad(
          lambda x, k: jnp.sum(conv(x, k).astype(jnp.float32) ** 2),
          argnums=(0, 1)))
      xd, kd = x.astype(dt), k.astype(dt)
      for label, fn in (("fwd", fwd), ("fwd+bwd", grad)):
        sec = timing.median_time(
            lambda fn=fn: jax.block_until_ready(fn(xd, kd)), 1, 5)
        out[f"{side}x{side}x{c} {name} {label}"] = 1e3 * sec
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", default="")
  p.add_argument("--worker", action="store_true")
  args = p.parse_args()
  if args.worker:
    print(json.dumps(worker()))
    return
  machine = timing.machine()
  results = {}
  for flags in FLAG_SETS:
    env = timing.worker_env("tuned")
    env["XLA_FLAGS"] = flags
    res = subprocess.run([sys.executable, os.path.abspath(__file__),
                          "--worker"], check=True, capture_output=True,
                         text=True, env=env)
    results[flags] = json.loads(res.stdout.strip().splitlines()[-1])
    print(flags or "(no flags)", results[flags], flush=True)
  cols = [f"{side}x{side}x{c} {name} {label}" for side, c in SHAPES
          for name in DTYPES for label in ("fwd", "fwd+bwd")]
  lines = ["| conv (batch 10, 3x3) | dtype | pass | " + " | ".join(
      f"`{f}` ms" if f else "no flags ms" for f in FLAG_SETS) + " |",
           "|" + " --- |" * (3 + len(FLAG_SETS))]
  for col in cols:
    shape, name, label = col.split(" ")
    lines.append(f"| {shape} | {name} | {label} | " + " | ".join(
        f"{results[f][col]:.1f}" for f in FLAG_SETS) + " |")
  table = "\n".join(lines)
  print(table)
  if args.out:
    import jax  # pylint: disable=g-import-not-at-top
    with open(args.out, "w") as f:
      f.write(timing.report_header(
          "Stock 3x3 convolutions under XLA:CPU flags",
          "benchmarks/xla_flags_conv.py", sys.argv[1:], machine,
          f"jax {jax.__version__}, tuned allocator, median of 5"))
      f.write(table + "\n")


if __name__ == "__main__":
  main()
