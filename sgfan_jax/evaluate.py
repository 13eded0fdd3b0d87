"""Evaluation of every configured split: predictions -> report.

For each ``'builder:split'`` in ``config.data.eval_splits`` the jitted
``eval_step`` (built on ``inference.predict_crops``) runs over fixed-size padded batches (the mask drops the
padding on the host, so no face is dropped or counted twice); the host
collects per-face predictions in original-image coordinates, both the
paper's baseline (Eq. 4 decoding) and the score-guided refinement (Eq. 1-2),
and ``report.write_report`` computes every metric and writes
``results.json``, ``results.md``, CED plots, predictions and images.
Splits that are not built are skipped with a message.
"""

import dataclasses
import functools
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import numpy as np
import tqdm

from sgfan_jax import augment
from sgfan_jax import inference
from sgfan_jax import input_pipeline
from sgfan_jax import metrics
from sgfan_jax import parallel
from sgfan_jax import report


def eval_step(variables: Dict[str, Any], batch: Dict[str, jax.Array],
              dictionary, *, apply_fn: Callable,
              spec: inference.InferenceSpec) -> Dict[str, jax.Array]:
  """Per-image predictions for a (padded) eval batch (``inference`` layer).

  Args:
    variables: ``{"params", "batch_stats"}``.
    batch: 'image' uint8 ``[B, S, S, 3]``, 'crop_to_image' ``[B, 2, 3]``.
    dictionary: device shape dictionary or None.
    apply_fn: ``model.apply``.
    spec: ``inference.InferenceSpec``.

  Returns a dict of arrays with leading axis B:
    'points' [B, N, 2]: Eq. 4 decoding (the paper's baseline), original-image
      coordinates;
    'refined' [B, N, 2]: after score-guided refinement (Eq. 1-2), or a copy
      of 'points' when ``dictionary`` is None;
    'weights' [B, N]: Eq. 1 landmark confidences; 'peak' [B, N]: heatmap
      maxima.
  """
  out = inference.predict_crops(apply_fn, variables, batch["image"],
                                batch["crop_to_image"], dictionary, spec=spec)
  return {"points": out["raw_points"], "refined": out["points"],
          "weights": out["confidence"], "peak": out["peak"]}


def make_eval_step(apply_fn: Callable, spec: inference.InferenceSpec):
  """Jitted ``eval_step(variables, batch, dictionary)``."""
  return jax.jit(functools.partial(eval_step, apply_fn=apply_fn, spec=spec))


def predict_split(variables: Dict[str, Any], apply_fn: Callable, source,
                  meta: Dict[str, Any], config, dictionary=None,
                  max_examples: int = -1, num_images: int = 0, eval_fn=None,
                  progress: bool = True) -> report.SplitResult:
  """Runs the model over one split.

  Args:
    variables: ``{"params", "batch_stats"}`` (``train.variables_of(state)``
      or ``inference.load_checkpoint_variables``).
    apply_fn: ``model.apply``.
    source: random-access source of DESIGN.md examples.
    meta: split metadata dict (crop_size, crop_context, layout, ...).
    config: the run config.
    dictionary: ShapeDictionary for refinement, or None (refined = baseline).
    max_examples: > 0 evaluates only the first K faces.
    num_images: how many stored crops to keep for drawing.
    eval_fn: a jitted eval step to reuse (``make_eval_step``; built here if
      None).
    progress: show a progress bar.

  Returns:
    SplitResult with gt / baseline / refined [M, N, 2] in original-image
    coordinates, weights [M, N], visible [M, N], file names.
  """
  if max_examples and max_examples > 0 and max_examples < len(source):
    source = _Head(source, max_examples)
  if eval_fn is None:
    eval_fn = make_eval_step(apply_fn, inference.inference_spec(config, meta))
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
  variables = parallel.replicate(variables, mesh)
  if dictionary is not None:
    dictionary = parallel.replicate(dictionary, mesh)
  rows = {"points": [], "refined": [], "weights": [], "gt": [], "visible": [],
          "index": []}
  images, transforms = [], []
  batches = input_pipeline.eval_batches(source,
                                        batch_size=config.eval.batch_size)
  if progress and jax.process_index() == 0:
    batches = tqdm.tqdm(
        batches, unit="batch", leave=False, dynamic_ncols=True,
        total=input_pipeline.num_eval_batches(len(source),
                                              config.eval.batch_size))
  for batch in batches:
    mask = batch.pop("mask")
    index = batch.pop("index")
    arrays = parallel.shard_batch(
        {k: v for k, v in batch.items() if k in input_pipeline.BATCH_FEATURES},
        mesh)
    out = parallel.to_host(eval_fn(variables, arrays, dictionary))
    out = {k: np.asarray(v)[mask] for k, v in out.items()}
    rows["points"].append(out["points"])
    rows["refined"].append(out["refined"])
    rows["weights"].append(out["weights"])
    rows["gt"].append(batch["landmarks_original"][mask])
    rows["visible"].append(batch["visible"][mask])
    rows["index"].append(index[mask])
    for i in np.flatnonzero(mask):
      if len(images) < num_images:
        images.append(batch["image"][i])
        transforms.append(np.asarray(augment.invert_affine(
            batch["crop_to_image"][i])))
  cat = {k: np.concatenate(v) for k, v in rows.items()}
  order = np.argsort(cat["index"])
  if not np.array_equal(cat["index"][order], np.arange(len(source))):
    raise RuntimeError("evaluation did not see every face exactly once")
  names = [_file_name(source[int(i)]) for i in cat["index"][order]]
  return report.SplitResult(
      gt=cat["gt"][order], baseline=cat["points"][order],
      refined=cat["refined"][order], weights=cat["weights"][order],
      visible=cat["visible"][order], file_names=names,
      images=images or None, image_indices=list(range(len(images))) or None,
      image_transforms=np.stack(transforms) if transforms else None)


class _Head:
  """The first ``n`` examples of a source."""

  def __init__(self, source, n):
    self._source, self._n = source, n

  def __len__(self):
    return self._n

  def __getitem__(self, i):
    if not 0 <= i < self._n:
      raise IndexError(i)
    return self._source[i]


def _file_name(example) -> str:
  name = example.get("file_name", "")
  return name.decode() if isinstance(name, bytes) else str(name)


def validation_nme(variables, apply_fn, source, meta, config,
                   eval_fn=None) -> float:
  """Mean baseline NME on a split (``eval.val_normalization``)."""
  result = predict_split(variables, apply_fn, source, meta, config, None,
                         config.eval.splits_max_examples, eval_fn=eval_fn,
                         progress=False)
  values = metrics.nme(result.baseline, result.gt,
                       config.eval.val_normalization, layout=meta["layout"])
  return metrics.mean_nme(values)


def open_eval_splits(specs: Sequence[str], data_dir: Optional[str],
                     layout: str):
  """Opens every ``'builder:split'`` of ``specs`` that is built.

  Returns {spec: (source, meta dict)}; skipped splits are printed with why.
  """
  opened = {}
  for spec in specs:
    name, split = input_pipeline.parse_split_spec(spec)
    try:
      source, meta = input_pipeline.open_split(name, split, data_dir)
    except (FileNotFoundError, ValueError) as e:
      print(f"Skipping {spec}: {e}")
      continue
    meta = dataclasses.asdict(meta)
    if meta["layout"] != layout:
      print(f"Skipping {spec}: its layout {meta['layout']} differs from the "
            f"model's {layout}")
      continue
    opened[spec] = (source, meta)
  return opened


def evaluate_splits(config, workdir: str, variables, apply_fn, dictionary,
                    data_dir=None, layout: str = "ibug68"
                    ) -> Optional[Dict[str, Any]]:
  """Evaluates every built eval split and writes the report into workdir.

  Returns the report paths (``report.write_report``) or None when no split
  could be evaluated.
  """
  results = {}
  for spec, (source, meta) in open_eval_splits(
      config.data.eval_splits, data_dir, layout).items():
    print(f"Evaluating {spec} ({meta['num_examples']} faces)...")
    results[spec] = predict_split(
        variables, apply_fn, source, meta, config, dictionary,
        config.eval.splits_max_examples, config.eval.num_vis_images)
  if not results:
    print("No evaluation split is built; nothing to evaluate.")
    return None
  paths = report.write_report(workdir, results, layout, config)
  print(f"Report: {paths['results_md']}")
  return paths
