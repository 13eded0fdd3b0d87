"""Timing of Eq. 1 weights + Eq. 2 search + reconstruction on this machine.

JAX (jitted, after warm-up, median of repeats, ``block_until_ready``) against
the naive numpy loops of tests/test_confidence.py and tests/test_refine.py, for
a batch of 10 faces and a single face, with the config defaults (128 x 128
score maps, N = 68, K = dictionary_size atoms, k = num_neighbors).

Command::

  python benchmarks/refine.py --out_md benchmarks/results/refine.md
"""

import argparse
import os
import pathlib
import platform
import statistics
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

from configs import default as default_config  # pylint: disable=g-import-not-at-top
from sgfan_jax import refine  # pylint: disable=g-import-not-at-top
from sgfan_jax import confidence  # pylint: disable=g-import-not-at-top
from tests import test_refine  # pylint: disable=g-import-not-at-top
from tests import test_confidence  # pylint: disable=g-import-not-at-top


def _median_ms(fn, repeats):
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return 1e3 * statistics.median(times)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--repeats", type=int, default=50)
  p.add_argument("--naive_repeats", type=int, default=3)
  p.add_argument("--out_md", default="")
  args = p.parse_args(argv)
  cfg = default_config.get_config()
  rc = cfg.refine
  size, n = cfg.model.input_size, 68
  rng = np.random.default_rng(0)
  atoms = test_refine.make_dictionary(rng, k=rc.dictionary_size, n=n)
  radius = rc.weight_radius

  @jax.jit
  def pipeline(score_maps, points, atoms):
    w = confidence.landmark_confidence(score_maps, points, radius=radius)
    return refine.refine_shapes(points, w, atoms,
                                num_neighbors=rc.num_neighbors,
                                weight_threshold=rc.weight_threshold,
                                mode=rc.mode, ridge=rc.ridge)

  def naive(maps, pts):
    w = test_confidence.naive_weights(maps, pts, radius)
    return test_refine.naive_refine(pts, w, atoms, rc.num_neighbors,
                                    rc.weight_threshold, rc.mode, rc.ridge)[0]

  rows = []
  for batch in (10, 1):
    maps = rng.uniform(size=(batch, size, size, n)).astype(np.float32)
    pts = rng.uniform(10, size - 10, size=(batch, n, 2)).astype(np.float32)
    d_maps, d_pts, d_atoms = (jax.device_put(x) for x in (maps, pts, atoms))
    jax.block_until_ready(pipeline(d_maps, d_pts, d_atoms))   # compile
    for _ in range(3):
      jax.block_until_ready(pipeline(d_maps, d_pts, d_atoms))
    w_dev = confidence.landmark_confidence(d_maps, d_pts, radius=radius)
    jax.block_until_ready(w_dev)
    kw = dict(num_neighbors=rc.num_neighbors,
              weight_threshold=rc.weight_threshold, mode=rc.mode,
              ridge=rc.ridge)
    jax.block_until_ready(refine.refine_shapes(d_pts, w_dev, d_atoms, **kw))
    t_all = _median_ms(lambda: jax.block_until_ready(
        pipeline(d_maps, d_pts, d_atoms)), args.repeats)
    t_w = _median_ms(lambda: jax.block_until_ready(confidence.landmark_confidence(
        d_maps, d_pts, radius=radius)), args.repeats)
    t_r = _median_ms(lambda: jax.block_until_ready(refine.refine_shapes(
        d_pts, w_dev, d_atoms, **kw)), args.repeats)
    t_naive = _median_ms(lambda: naive(maps, pts), args.naive_repeats)
    # Same answer (sanity): JAX vs naive.
    diff = float(np.abs(np.asarray(pipeline(d_maps, d_pts, d_atoms))
                        - naive(maps, pts)).max())
    rows.append((batch, t_w, t_r, t_all, t_naive, diff))

  env = (f"{platform.processor() or platform.machine()}, "
         f"{os.cpu_count()} CPUs (shared with other jobs while measured), "
         f"jax {jax.__version__} {jax.default_backend()}")
  settings = (f"score maps {size}x{size}x{n}, K={rc.dictionary_size} atoms, "
              f"k={rc.num_neighbors}, r={radius}, mode={rc.mode}; JAX median "
              f"of {args.repeats}, naive median of {args.naive_repeats}")
  head = ("| batch | JAX weights (ms) | JAX search+recon (ms) | JAX all, "
          "jitted together (ms) | JAX all per face (ms) | naive numpy all "
          "(ms) | naive per face (ms) | speed-up | max diff (px) |\n"
          "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
  body = "\n".join(
      f"| {b} | {tw:.3f} | {tr:.3f} | {ta:.3f} | {ta / b:.3f} | {tn:.1f} | "
      f"{tn / b:.1f} | {tn / ta:.0f}x | {d:.1e} |"
      for b, tw, tr, ta, tn, d in rows)
  table = head + body + "\n"
  print(env)
  print(settings)
  print(table)
  if args.out_md:
    cmd = "python benchmarks/refine.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    with open(args.out_md, "w") as f:
      f.write("# Refinement timing (Eq. 1 weights + Eq. 2 search + "
              "reconstruction)\n\n")
      f.write(f"Command (from the repository root):\n\n```\n{cmd}\n```\n\n")
      f.write(f"{env}\n\n{settings}\n\n{table}")
  return rows


if __name__ == "__main__":
  main()
