r"""Train-step throughput and forward latency of SGFAN per conv implementation
and compute dtype.

  .venv/bin/python benchmarks/train_step.py [--widths 64,128,256] \
      [--impls xla,cpu] [--dtypes float32,bfloat16] [--output_strides 1,2] \
      [--cpu_kernels kxk=im2col,strided=im2col] \
      [--out benchmarks/results/train_step.md]

``--dtypes``: config.model.dtype of each row (bfloat16: conv.py /
model.py). ``--cpu_kernels``: overrides of the bfloat16 row of
conv.CPU_KERNELS (kind=kernel, comma-separated) in the workers, to time a
candidate kernel choice in the network before writing it into the table.

For each (width, conv_impl, dtype), in a fresh subprocess: the real jitted train
step of sgfan_jax/train.py (``make_train_step``: on-device augmentation,
target rendering, SGFAN forward/backward, Eq. 3, RMSProp; state donated) on a
synthetic uint8 batch of 10 stored crops (256x256, ibug68 layout), and the
eval-mode forward pass at batch 1 (``predict_maps``). Both after warm-up
(compilation + 1 call), median of repeats. Peak RSS (``ru_maxrss``) of the
subprocess is reported too. Implementations alternate within each width.
"""

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks import timing  # pylint: disable=g-import-not-at-top,wrong-import-position

BATCH = 10
CROP = 256


_median_time = timing.median_time


def synthetic_step(width, impl="auto", dtype="float32", output_stride=1):
  """The real jitted train step of ``width`` on a synthetic batch.

  Returns ``(config, state, batch, step, key)``: a uint8 batch of ``BATCH``
  stored crops with a face-like point cloud, the donated ``make_train_step``
  and its PRNG key. Shared by this script and benchmarks/roofline.py.
  """
  import jax
  import numpy as np
  from configs import default as default_config
  from sgfan_jax import layouts
  from sgfan_jax import train as train_lib

  config = default_config.get_config()
  config.model.width = width
  config.model.conv_impl = impl
  config.model.dtype = dtype
  config.model.output_stride = output_stride
  layout = layouts.get_layout(config.data.layout)
  n = layout.num_points
  metadata = {"crop_size": CROP, "crop_context": 2.2,
              "layout": config.data.layout, "num_examples": 1000}
  spec = train_lib.step_spec(config, metadata)
  state = train_lib.create_train_state(config, n, 1000,
                                       jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  # A mean face-ish cloud of points inside the central window.
  points = (CROP / 2 + rng.normal(scale=25.0, size=(BATCH, n, 2))).astype(
      np.float32)
  batch = {"image": rng.integers(0, 256, (BATCH, CROP, CROP, 3), np.uint8),
           "landmarks": points, "visible": np.ones((BATCH, n), bool)}
  batch = jax.device_put(batch)
  return config, state, batch, train_lib.make_train_step(spec), (
      jax.random.PRNGKey(1))


def add_dtype_flags(parser) -> None:
  """--dtypes and --cpu_kernels (this script and benchmarks/roofline.py)."""
  parser.add_argument("--dtypes", default="float32",
                      help="compute dtypes (config.model.dtype), e.g. "
                      "float32,bfloat16")
  parser.add_argument("--cpu_kernels", default="",
                      help="bfloat16 CPU_KERNELS overrides, e.g. "
                      "kxk=im2col,strided=im2col")


def parse_cpu_kernels(spec: str) -> dict:
  """'kxk=im2col,strided=xla' -> {'kxk': 'im2col', 'strided': 'xla'}."""
  from sgfan_jax import conv as conv_lib  # pylint: disable=g-import-not-at-top
  out = {}
  for item in filter(None, spec.split(",")):
    kind, _, name = item.partition("=")
    if kind not in conv_lib.KINDS or name not in conv_lib.KERNELS:
      raise ValueError(f"--cpu_kernels: {item!r} is not kind=kernel with "
                       f"kind in {conv_lib.KINDS}, kernel in "
                       f"{conv_lib.KERNELS}")
    out[kind] = name
  return out


def set_cpu_kernels(spec: str) -> None:
  """Applies --cpu_kernels to the bfloat16 row of conv.CPU_KERNELS."""
  from sgfan_jax import conv as conv_lib  # pylint: disable=g-import-not-at-top
  conv_lib.CPU_KERNELS["bfloat16"].update(parse_cpu_kernels(spec))


def worker(width, impl, reps, dtype="float32", cpu_kernels="",
           output_stride=1):
  """Times the real train step and the batch-1 forward; returns a dict."""
  import jax
  from sgfan_jax import inference
  from sgfan_jax import model as model_lib
  from sgfan_jax import train as train_lib

  set_cpu_kernels(cpu_kernels)
  config, state, batch, step, key = synthetic_step(width, impl, dtype,
                                                   output_stride)
  holder = [state]

  def run_step():
    holder[0], metrics = step(holder[0], batch, key)
    jax.block_until_ready(metrics["loss"])

  out = {"params": model_lib.count_params(state.params)}
  t0 = time.perf_counter()
  run_step()
  out["compile_s"] = time.perf_counter() - t0
  out["train_s"] = _median_time(run_step, reps["warmup"], reps["train"])
  predict = jax.jit(functools.partial(inference.predict_maps,
                                      holder[0].apply_fn))
  x = jax.numpy.zeros((1, config.model.input_size,
                       config.model.input_size, 3))
  out["fwd1_s"] = _median_time(
      lambda: jax.block_until_ready(predict(
          train_lib.variables_of(holder[0]), x)), reps["warmup"] + 1,
      reps["fwd1"])
  return out


_machine = timing.machine


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--widths", default="64,128,256")
  parser.add_argument("--impls", default="xla,cpu")
  add_dtype_flags(parser)
  parser.add_argument("--output_strides", default="1",
                      help="model.output_stride of each row: 1 (128x128 "
                      "maps, the paper) and/or 2 (64x64 maps)")
  parser.add_argument("--reps", default=json.dumps(
      {"warmup": 1, "train": 3, "fwd1": 7}))
  parser.add_argument("--allocator", default="tuned",
                      choices=timing.ALLOCATORS,
                      help="glibc malloc setting of the workers ('tuned' = "
                      "what main.py runs with; see host_allocator.py)")
  parser.add_argument("--out", default="")
  parser.add_argument("--worker", default="")
  args = parser.parse_args()
  widths = [int(w) for w in args.widths.split(",")]
  impls = args.impls.split(",")
  dtypes = args.dtypes.split(",")
  strides = [int(s) for s in args.output_strides.split(",")]
  parse_cpu_kernels(args.cpu_kernels)           # fail early on a typo
  reps = json.loads(args.reps)

  if args.worker:
    out = worker(widths[0], args.worker, reps, dtypes[0], args.cpu_kernels,
                 strides[0])
    out["peak_rss_mb"] = resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps(out))
    return

  machine = _machine()
  print(f"machine: {machine}", flush=True)
  results = {}
  combos = [(impl, dtype, stride) for stride in strides for dtype in dtypes
            for impl in impls]
  for i, width in enumerate(widths):
    order = combos if i % 2 == 0 else combos[::-1]
    for impl, dtype, stride in order:
      cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl,
             "--widths", str(width), "--reps", json.dumps(reps),
             "--dtypes", dtype, "--cpu_kernels", args.cpu_kernels,
             "--output_strides", str(stride)]
      res = subprocess.run(cmd, check=True, capture_output=True, text=True,
                           env=timing.worker_env(args.allocator))
      key = (width, impl, dtype, stride)
      results[key] = json.loads(res.stdout.strip().splitlines()[-1])
      print(f"width {width} {impl} {dtype} stride {stride}: {results[key]}",
            flush=True)

  lines = ["| width | params | conv_impl | dtype | output maps | "
           "train step b10 img/s | "
           "step s | fwd b1 ms | peak RSS MB | compile+1st step s |",
           "|" + " --- |" * 10]
  for width in widths:
    for impl, dtype, stride in combos:
      r = results[(width, impl, dtype, stride)]
      side = 128 // stride
      lines.append(f"| {width} | {r['params']:,} | {impl} | {dtype} | "
                   f"{side}x{side} | "
                   f"{BATCH / r['train_s']:.3f} | {r['train_s']:.2f} | "
                   f"{r['fwd1_s'] * 1e3:.1f} | {r['peak_rss_mb']:.0f} | "
                   f"{r['compile_s']:.0f} |")
  table = "\n".join(lines)
  print(table)
  if args.out:
    import jax  # pylint: disable=g-import-not-at-top
    with open(args.out, "w") as f:
      kernels = (f"; bfloat16 CPU_KERNELS overrides {args.cpu_kernels}"
                 if args.cpu_kernels else "")
      f.write(timing.report_header(
          "SGFAN train step and forward latency per conv_impl and dtype",
          "benchmarks/train_step.py", sys.argv[1:], machine,
          f"jax {jax.__version__}, backend {jax.default_backend()}; "
          f"allocator {args.allocator} (host_allocator.py){kernels}"))
      f.write(table + "\n\n")
      f.write("Train step: the real jitted step (make_train_step: "
              "augmentation, targets, forward/backward, Eq. 3, RMSProp) on a "
              "synthetic batch of 10 uint8 256x256 crops, median of "
              f"{reps['train']} steps after compilation + {reps['warmup']} "
              f"warm-up step(s). Forward: eval mode, batch 1, median of "
              f"{reps['fwd1']}. One fresh subprocess per row; peak RSS is its "
              "ru_maxrss.\n")


if __name__ == "__main__":
  main()
