r"""Input pipeline throughput: host loading and device augmentation, images/s.

Measures, with the default config (configs/default.py):

* host: ``input_pipeline.train_batches`` (array_record read + JPEG decode +
  batching) with ``data.num_workers`` worker processes, and in-process for
  comparison, plus the bare single-thread ``source[i]`` decode rate;
* device: the jitted ``augment.train_transform`` and ``eval_transform`` on a
  batch of ``batch_size`` 256 px crops to ``model.input_size``, after
  warm-up, median over repeats.

Without ``--data_dir`` the bundled 300-W sample (sample_data/300w) is built
into a temporary TFDS dir first (a few seconds).

Command:

  python -m benchmarks.pipeline --output benchmarks/results/pipeline.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import numpy as np

from configs import default
from sgfan_jax import augment
from sgfan_jax import input_pipeline
from sgfan_jax import layouts

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _host_rate(source, batch_size, num_batches, num_workers, prefetch,
               num_threads, seed):
  """images/s of train_batches after the first batch (worker start-up)."""
  it = input_pipeline.train_batches(
      source, batch_size=batch_size, seed=seed, num_workers=num_workers,
      prefetch=prefetch, num_threads=num_threads)
  start = time.perf_counter()
  next(it)
  startup = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(num_batches):
    next(it)
  elapsed = time.perf_counter() - start
  it.close()
  return num_batches * batch_size / elapsed, startup


def _decode_rate(source, count):
  """images/s of plain ``source[i]`` in this thread."""
  start = time.perf_counter()
  for i in range(count):
    source[i % len(source)]
  return count / (time.perf_counter() - start)


def _device_rate(fn, args, batch_size, repeats):
  """images/s of a jitted function: median time over repeats after warm-up."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return batch_size / statistics.median(times)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default=None,
                      help="TFDS dir with a built dataset (default: build the "
                      "bundled sample into a temporary dir)")
  parser.add_argument("--dataset", default="face300w")
  parser.add_argument("--split", default="train")
  parser.add_argument("--batch_size", type=int, default=None,
                      help="default: config batch_size")
  parser.add_argument("--host_batches", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--output", default=None,
                      help="also write the table as markdown here")
  args = parser.parse_args(argv)

  config = default.get_config()
  batch_size = args.batch_size or config.batch_size
  tmp = None
  data_dir = args.data_dir
  if data_dir is None:
    from tfds_builders import build  # pylint: disable=g-import-not-at-top
    tmp = tempfile.TemporaryDirectory(prefix="sgfan_bench_")
    data_dir = tmp.name
    build.build("face300w", str(REPO_ROOT / "sample_data" / "300w"), data_dir)
  source, meta = input_pipeline.open_split(args.dataset, args.split, data_dir)

  rows = []
  decode = _decode_rate(source, 3 * len(source))
  rows.append(("host", "source[i] decode, 1 thread", f"{decode:.1f}", ""))
  for workers, threads in ((config.data.num_workers, 1), (0, 1), (0, 2)):
    rate, startup = _host_rate(source, batch_size, args.host_batches, workers,
                               config.data.prefetch, threads, config.seed)
    rows.append(("host", f"train_batches B={batch_size}, {workers} workers, "
                 f"{threads} threads, prefetch {config.data.prefetch}",
                 f"{rate:.1f}", f"first batch {startup:.2f} s"))

  window = augment.input_window_side(meta.crop_size, meta.crop_context,
                                     config.data.face_context)
  out_size = config.model.input_size
  rng = np.random.default_rng(0)
  layout = layouts.get_layout(meta.layout)
  images = rng.integers(0, 256, (batch_size, meta.crop_size, meta.crop_size, 3),
                        dtype=np.uint8)
  points = rng.uniform(0, meta.crop_size, (batch_size, layout.num_points, 2)
                       ).astype(np.float32)
  visible = np.ones((batch_size, layout.num_points), bool)
  perm = layout.flip_permutation
  train_fn = jax.jit(lambda key, im, pt, vi: augment.train_transform(
      key, im, pt, vi, aug=config.augment, flip_perm=perm, window_side=window,
      out_size=out_size))
  eval_fn = jax.jit(lambda im, pt: augment.eval_transform(
      im, pt, window_side=window, out_size=out_size))
  images, points, visible = map(jax.device_put, (images, points, visible))
  rate = _device_rate(train_fn, (jax.random.PRNGKey(0), images, points,
                                 visible), batch_size, args.repeats)
  rows.append(("device", f"train_transform (jit) B={batch_size}, "
               f"{meta.crop_size}->{out_size}", f"{rate:.1f}",
               f"median of {args.repeats}"))
  rate = _device_rate(eval_fn, (images, points), batch_size, args.repeats)
  rows.append(("device", f"eval_transform (jit) B={batch_size}, "
               f"{meta.crop_size}->{out_size}", f"{rate:.1f}",
               f"median of {args.repeats}"))

  load = os.getloadavg()
  header = (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} "
            f"UTC, {os.cpu_count()} CPUs, load average {load[0]:.1f} "
            f"(shared machine), jax {jax.__version__} "
            f"{jax.default_backend()}; data: {meta.dataset}:{meta.split} "
            f"({meta.num_examples} examples"
            f"{', bundled sample' if args.data_dir is None else ''})")
  table = ["| side | what | images/s | note |", "| --- | --- | ---: | --- |"]
  table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
  text = header + "\n\n" + "\n".join(table)
  print(text)
  if args.output:
    command = "python -m benchmarks.pipeline " + " ".join(
        sys.argv[1:] if argv is None else argv)
    pathlib.Path(args.output).write_text(
        "# Input pipeline throughput\n\nCommand (from the repository root):"
        f"\n\n    {command.strip()}\n\n{text}\n")
  if tmp is not None:
    tmp.cleanup()
  return 0


if __name__ == "__main__":
  sys.exit(main())
