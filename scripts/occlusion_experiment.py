"""Simulated-occlusion experiment for the Eq. 2 shape refinement.

Builds the K-SVD shape dictionary from the 1,911 shapes of the face300w
``train`` split, the faces the shipped model's dictionary is built from: the
2,012 faces of ``300w/afw``, ``300w/helen/trainset`` and ``300w/lfpw/trainset``
minus the 101 ``val`` faces (``face300w_dataset_builder.val_names`` of the
image paths relative to the 300w folder). Then, for the 554 shapes of the
common test subset (``300w/helen/testset`` + ``300w/lfpw/testset``) and the
135 iBUG shapes (challenging subset, from
``300w_test_annotations/face_landmarks_300w_valid_challenge.csv``), it
simulates what a detector suffers under occlusion and measures what refinement
does. No test or ``val`` shape is in the dictionary.

Simulation, per face (seeded):

* every point gets localisation noise ``N(0, loc_noise * F)`` per coordinate,
  ``F`` = face size = max side of the ground-truth landmark box;
* one region is picked uniformly from: left eye + brow, right eye + brow,
  mouth, nose, left half jaw, right half jaw (9 to 20 of 68 points, 13-29%);
* its points are displaced by one common vector of random direction and
  length uniform in ``[min_shift, max_shift] * F`` (a few pixels to a quarter
  of the face), plus independent jitter ``N(0, jitter * F)``;
* displaced points get weights uniform in ``[low_w_min, low_w_max]``; the others
  ``1 - |N(0, high_w_noise)|`` clipped to [0, 1].

Reported per subset: mean error of the displaced points before / after (in
pixels of the annotation frame and as NME, i.e. divided by the inter-ocular
distance = outer eye corners), the mean and max movement of the untouched
points as a fraction of the inter-ocular distance, and the all-point NME.

Command (writes the markdown table with --out_md)::

  python scripts/occlusion_experiment.py \
    --out_md benchmarks/results/occlusion_experiment.md

``--sweep`` also tunes K / sparsity / k / ridge with the dictionary built from
all but a seeded held-out part of the training shapes (``SWEEP_HOLDOUT``
shapes) and the simulation run on that part; it never sees test shapes.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
from typing import Dict, Optional

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from configs import default as default_config  # pylint: disable=g-import-not-at-top
from sgfan_jax import ksvd  # pylint: disable=g-import-not-at-top
from sgfan_jax import layouts  # pylint: disable=g-import-not-at-top
from sgfan_jax import pts_io  # pylint: disable=g-import-not-at-top
from sgfan_jax import refine  # pylint: disable=g-import-not-at-top

OCCLUDED_REGIONS = ("left_eye_brow", "right_eye_brow", "mouth", "nose",
                    "left_jaw", "right_jaw")
# Simulation settings (fractions of the face size F unless stated).
SIM_DEFAULTS = dict(
    loc_noise=0.005,    # per-coordinate std of every point's decode noise
    min_shift=0.03,     # displacement length range of the occluded region
    max_shift=0.25,
    jitter=0.01,        # per-point std on top of the common displacement
    low_w_min=0.05,     # weights of displaced points: uniform in this range
    low_w_max=0.4,
    high_w_noise=0.1,   # others: 1 - |N(0, this)|
)


def default_data_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("SGFAN_SHARED_DATA",
                                     REPO.parent / "shared" / "data"))


# The common test subset: folders below the shared 300w/ folder.
COMMON_SUBSETS = ("helen/testset", "lfpw/testset")
# Training shapes the --sweep holds out (the dictionary gets the rest).
SWEEP_HOLDOUT = 250


def load_faces(root: os.PathLike, subsets) -> Dict[str, np.ndarray]:
  """``{relative path without extension: [68, 2]}`` of 300-W folders."""
  return {rel: pts_io.read_pts(pts)
          for rel, _, pts in pts_io.find_faces(root, subsets)}


def train_faces(root: os.PathLike) -> Dict[str, np.ndarray]:
  """The face300w ``train`` split: ``TRAIN_SUBSETS`` minus the ``val`` faces.

  The same selection as the TFDS builder (and ``compare_300w.val_faces``):
  ``val_names`` of the image paths relative to ``root``, e.g.
  ``afw/1051618982_1.jpg``.

  Returns:
    ``{relative path without extension: [68, 2]}``, sorted by path.
  """
  from tfds_builders.face300w import face300w_dataset_builder as b  # pylint: disable=g-import-not-at-top
  return {rel: pts_io.read_pts(pts)
          for rel, _, pts in b.train_val_faces(root)[0]}


def load_data(data_dir: os.PathLike):
  """Returns (train [1911,68,2], common [554,68,2], challenging [135,68,2])."""
  data_dir = pathlib.Path(data_dir)
  root = data_dir / "300w"
  train = np.stack(list(train_faces(root).values()))
  common = np.stack(list(load_faces(root, COMMON_SUBSETS).values()))
  _, challenging = pts_io.read_300w_csv(
      data_dir / "300w_test_annotations" /
      "face_landmarks_300w_valid_challenge.csv")
  return train, common, challenging


def simulate_occlusion(gt: np.ndarray, rng: np.random.Generator,
                       layout: layouts.LandmarkLayout,
                       sim: Optional[Dict[str, float]] = None):
  """Simulates occluded detections.

  Args:
    gt: [M, N, 2] ground-truth shapes.
    rng: numpy Generator.
    layout: the landmark layout (regions).
    sim: settings (see SIM_DEFAULTS).

  Returns:
    (pred [M, N, 2], weights [M, N], displaced bool [M, N]).
  """
  sim = dict(SIM_DEFAULTS, **(sim or {}))
  m, n, _ = gt.shape
  face = np.max(gt.max(axis=1) - gt.min(axis=1), axis=-1)          # [M]
  pred = gt + rng.normal(size=gt.shape) * (sim["loc_noise"] * face)[:, None,
                                                                     None]
  displaced = np.zeros((m, n), bool)
  region_ids = rng.integers(len(OCCLUDED_REGIONS), size=m)
  angle = rng.uniform(0, 2 * np.pi, size=m)
  length = rng.uniform(sim["min_shift"], sim["max_shift"], size=m) * face
  for f in range(m):
    idx = list(layout.regions[OCCLUDED_REGIONS[region_ids[f]]])
    displaced[f, idx] = True
  shift = np.stack([np.cos(angle), np.sin(angle)], -1) * length[:, None]
  jitter = rng.normal(size=gt.shape) * (sim["jitter"] * face)[:, None, None]
  pred = np.where(displaced[..., None], pred + shift[:, None, :] + jitter,
                  pred)
  w_high = np.clip(1.0 - np.abs(rng.normal(size=(m, n))) * sim["high_w_noise"],
                   0.0, 1.0)
  w_low = rng.uniform(sim["low_w_min"], sim["low_w_max"], size=(m, n))
  weights = np.where(displaced, w_low, w_high)
  return pred.astype(np.float32), weights.astype(np.float32), displaced


def evaluate(gt, pred, refined, displaced, layout) -> Dict[str, float]:
  """Errors of the displaced points and movement of the untouched ones."""
  a, b = layout.outer_eye_corners
  iod = np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)[:, None]      # [M, 1]
  err_before = np.linalg.norm(pred - gt, axis=-1)
  err_after = np.linalg.norm(refined - gt, axis=-1)
  moved = np.linalg.norm(refined - pred, axis=-1) / iod
  und = ~displaced
  return dict(
      faces=len(gt),
      disp_px_before=float(err_before[displaced].mean()),
      disp_px_after=float(err_after[displaced].mean()),
      disp_nme_before=float((err_before / iod)[displaced].mean()),
      disp_nme_after=float((err_after / iod)[displaced].mean()),
      untouched_move_mean=float(moved[und].mean()),
      untouched_move_max=float(moved[und].max()),
      nme_before=float((err_before / iod).mean()),
      nme_after=float((err_after / iod).mean()),
  )


def run(train, test_sets: Dict[str, np.ndarray], refine_cfg, *, seed=0,
        modes=("threshold", "blend"), dictionary=None, sim=None):
  """Builds D_S (unless given), simulates, refines, evaluates.

  Returns:
    (rows: list of dicts (subset, mode, metrics), dictionary).
  """
  layout = layouts.get_layout(train.shape[1])
  if dictionary is None:
    dictionary = ksvd.build_dictionary(train, refine_cfg,
                                       layout_name=layout.name)
  rows = []
  for subset_i, (name, gt) in enumerate(test_sets.items()):
    rng = np.random.default_rng([seed, subset_i])
    pred, weights, displaced = simulate_occlusion(gt, rng, layout, sim)
    for mode in modes:
      refined = np.asarray(refine.refine_shapes(
          pred, weights, dictionary,
          num_neighbors=int(refine_cfg.num_neighbors),
          weight_threshold=float(refine_cfg.weight_threshold), mode=mode,
          ridge=float(refine_cfg.ridge)))
      rows.append(dict(subset=name, mode=mode,
                       **evaluate(gt, pred, refined, displaced, layout)))
  return rows, dictionary


def format_table(rows) -> str:
  head = ("| subset | mode | faces | displaced err px before -> after | "
          "displaced NME before -> after | reduction | untouched move "
          "mean / max (x IOD) | all-point NME before -> after |\n"
          "| --- | --- | ---: | --- | --- | ---: | --- | --- |\n")
  lines = []
  for r in rows:
    red = 1.0 - r["disp_px_after"] / r["disp_px_before"]
    lines.append(
        f"| {r['subset']} | {r['mode']} | {r['faces']} | "
        f"{r['disp_px_before']:.2f} -> {r['disp_px_after']:.2f} | "
        f"{r['disp_nme_before']:.4f} -> {r['disp_nme_after']:.4f} | "
        f"{100 * red:.1f}% | {r['untouched_move_mean']:.4f} / "
        f"{r['untouched_move_max']:.4f} | {r['nme_before']:.4f} -> "
        f"{r['nme_after']:.4f} |")
  return head + "\n".join(lines) + "\n"


def sweep(train, refine_cfg, *, holdout=SWEEP_HOLDOUT, seed=7,
          sizes=(100, 200, 400),
          sparsities=(1, 3, 5), neighbors=(5, 10, 20, 40),
          ridges=(1e-4, 1e-3, 1e-2, 1e-1)):
  """Tuning on the training shapes only: a held-out part is the test set.

  Returns:
    list of (dictionary_size, sparsity, k, ridge, displaced NME after,
    'threshold' mode) sorted best first.
  """
  perm = np.random.default_rng(123).permutation(len(train))
  val, fit = train[perm[:holdout]], train[perm[holdout:]]
  cfg = refine_cfg.copy_and_resolve_references()
  out = []
  for size in sizes:
    for sparsity in sparsities:
      dic = ksvd.build_dictionary(fit, cfg, dictionary_size=size,
                                  sparsity=sparsity)
      for k in neighbors:
        for ridge in ridges:
          cfg.num_neighbors, cfg.ridge = k, ridge
          rows, _ = run(fit, {"val": val}, cfg, seed=seed, dictionary=dic,
                        modes=("threshold",))
          out.append((size, sparsity, k, ridge, rows[0]["disp_nme_after"]))
  return sorted(out, key=lambda r: r[-1])


def main(argv=None):
  cfg = default_config.get_config().refine
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data_dir", default=str(default_data_dir()))
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--dictionary_size", type=int, default=cfg.dictionary_size)
  p.add_argument("--sparsity", type=int, default=cfg.sparsity)
  p.add_argument("--ksvd_iterations", type=int, default=cfg.ksvd_iterations)
  p.add_argument("--num_neighbors", type=int, default=cfg.num_neighbors)
  p.add_argument("--ridge", type=float, default=cfg.ridge)
  p.add_argument("--weight_threshold", type=float,
                 default=cfg.weight_threshold)
  p.add_argument("--out_md", default="")
  p.add_argument("--sweep", action="store_true",
                 help="also tune K / sparsity / k / ridge on held-out "
                 "training shapes (no test shapes) and print the top 10")
  args = p.parse_args(argv)
  cfg.dictionary_size = args.dictionary_size
  cfg.sparsity = args.sparsity
  cfg.ksvd_iterations = args.ksvd_iterations
  cfg.num_neighbors = args.num_neighbors
  cfg.ridge = args.ridge
  cfg.weight_threshold = args.weight_threshold
  train, common, challenging = load_data(args.data_dir)
  t0 = time.time()
  rows, dic = run(train, {"common (HELEN + LFPW test)": common,
                          "challenging (iBUG)": challenging}, cfg,
                  seed=args.seed)
  info = dic.info
  table = format_table(rows)
  summary = (
      f"training shapes: {len(train)}; dictionary: K={cfg.dictionary_size}, "
      f"sparsity={cfg.sparsity}, K-SVD iterations={cfg.ksvd_iterations}, "
      f"seed={cfg.ksvd_seed}; atom cosine with the mean shape: min "
      f"{info['atom_mean_cosine_min']:.3f}, median "
      f"{info['atom_mean_cosine_median']:.3f}\n"
      f"refine: k={cfg.num_neighbors}, ridge={cfg.ridge}, "
      f"weight_threshold={cfg.weight_threshold}; simulation seed "
      f"{args.seed}, settings {SIM_DEFAULTS}\n"
      f"(build + refine time {time.time() - t0:.1f} s)\n")
  if args.sweep:
    best = sweep(train, cfg)
    summary += (f"\nTuning sweep (dictionary from "
                f"{len(train) - SWEEP_HOLDOUT} training shapes, simulated "
                f"occlusion on the other {SWEEP_HOLDOUT}; 'threshold' mode; "
                "displaced-point NME after refinement, best 10 of "
                f"{len(best)}):\n" + "\n".join(
                    f"  K={r[0]} sparsity={r[1]} k={r[2]} ridge={r[3]:g}: "
                    f"{r[4]:.4f}" for r in best[:10]) + "\n")
  print(summary)
  print(table)
  if args.out_md:
    cmd = "python scripts/occlusion_experiment.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]))
    with open(args.out_md, "w") as f:
      f.write("# Simulated-occlusion experiment (Eq. 2 refinement)\n\n")
      f.write(f"Command (from the repository root):\n\n```\n{cmd}\n```\n\n")
      f.write("```\n" + summary + "```\n\n" + table)
  return rows


if __name__ == "__main__":
  main()
