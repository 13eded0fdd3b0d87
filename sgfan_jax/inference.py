"""Inference as pure functions: variables + face crops -> landmarks.

The layer under :class:`sgfan_jax.Landmarker` and under training's
``eval_step`` (training imports this module, never the other way round).
Every array function is jit/vmap-friendly and takes the model variables as a
plain pytree ``{"params": ..., "batch_stats": ...}`` (no optimiser state):

* :func:`predict_maps` - network forward: images ``[B, H, W, 3]`` -> heatmaps
  and score maps ``[B, H, W, N]`` (Sec. 3.1);
* :func:`predict_crops` - stored-convention face crops ``[B, S, S, 3]`` uint8
  -> Eq. 4 points, Eq. 1 confidences and Eq. 2 refined points, in
  original-image coordinates;
* :func:`make_predict_fn` - the jitted form of :func:`predict_crops`.

Loading: :func:`load_checkpoint_variables` (any training workdir, restores
parameters and batch statistics only), :func:`save_model` /
:func:`load_model` (a self-contained model folder: variables, config,
crop metadata, shape dictionary; what ``sgfan_jax/pretrained/`` holds).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Dict, Optional

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import default as default_config
from sgfan_jax import augment
from sgfan_jax import checkpoints as ckpt_lib
from sgfan_jax import confidence as confidence_lib
from sgfan_jax import crop
from sgfan_jax import decode
from sgfan_jax import ksvd
from sgfan_jax import layouts
from sgfan_jax import model as model_lib
from sgfan_jax import refine as refine_lib

# Files of a model folder (save_model / load_model).
VARIABLES_FILE = "variables.msgpack"
CONFIG_FILE = "config.json"
META_FILE = "meta.json"
DICTIONARY_FILE = "shape_dictionary.npz"
# Written by training into its workdir: the crop geometry of its dataset.
DATASET_META_FILE = "dataset_meta.json"


class ModelFileError(ValueError):
  """A model folder or checkpoint that cannot be loaded (message names it)."""


@dataclasses.dataclass(frozen=True)
class InferenceSpec:
  """Static constants of the prediction functions (hashable).

  Built from the config and the crop metadata by :func:`inference_spec`.
  """
  input_size: int              # network input side (px)
  window_side: float           # network window side in stored-crop pixels
  subpixel: bool               # Eq. 4 quadratic sub-pixel refinement
  weight_radius: int           # Eq. 1 window half-width r (input px)
  refine_neighbors: int        # Eq. 2 k nearest exemplars
  refine_threshold: float      # confidence below this = unreliable point
  refine_mode: str             # 'threshold' | 'blend'
  refine_ridge: float
  output_stride: int = 1       # input px per output-map px (model.py)
  score_radius: float = 3.0    # score target disc radius (input px)

  @property
  def map_weight_radius(self) -> int:
    """Eq. 1 window half-width in output-map px.

    Stride 1 (the paper): ``weight_radius``. Coarser maps: ``floor(r /
    stride)``, at most :func:`confidence.offset_safe_weight_radius` of the
    disc on the map (``score_radius / stride``), so a perfect score map
    gives w = 1 at any sub-pixel offset (a 3x3 window on the 1.5 px disc
    of stride 2 would give as little as 4/9).
    """
    if self.output_stride == 1:
      return self.weight_radius
    return min(max(int(self.weight_radius // self.output_stride), 0),
               confidence_lib.offset_safe_weight_radius(
                   self.score_radius / self.output_stride))


def map_to_input(points: jax.Array, stride: int) -> jax.Array:
  """Output-map coordinates -> network-input coordinates ``[..., 2]``.

  Pixel centres (docs/DESIGN.md: pixel (i, j) is at x=j, y=i): map pixel
  ``m`` covers input pixels ``s*m .. s*m + s - 1``, centre ``s*m + (s-1)/2``,
  so ``x_in = s * (x_map + 0.5) - 0.5``; identity at stride 1.
  """
  if stride == 1:
    return points
  return stride * (points + 0.5) - 0.5


def input_to_map(points: jax.Array, stride: int) -> jax.Array:
  """Inverse of :func:`map_to_input`."""
  if stride == 1:
    return points
  return (points + 0.5) / stride - 0.5


def inference_spec(config: ml_collections.ConfigDict,
                   metadata: Dict[str, Any]) -> InferenceSpec:
  """The prediction constants from ``config`` and crop ``metadata``.

  Args:
    config: the model's config (configs/default.py fields).
    metadata: ``crop_size`` and ``crop_context`` of the stored crops (the
      TFDS builder's metadata).
  """
  if dataclasses.is_dataclass(metadata):
    metadata = dataclasses.asdict(metadata)
  return InferenceSpec(
      input_size=int(config.model.input_size),
      window_side=augment.input_window_side(
          metadata["crop_size"], metadata["crop_context"],
          config.data.face_context),
      subpixel=bool(config.decode.subpixel),
      weight_radius=int(config.refine.weight_radius),
      refine_neighbors=int(config.refine.num_neighbors),
      refine_threshold=float(config.refine.weight_threshold),
      refine_mode=str(config.refine.mode),
      refine_ridge=float(config.refine.ridge),
      output_stride=int(config.model.output_stride),
      score_radius=float(config.targets.score_radius),
  )


PRECISIONS = model_lib.DTYPES
# predict.precision='auto': the prediction compute dtype per backend, the
# faster one where its landmarks stay within the tolerance of
# tests/test_bf16.py (measured: BENCHMARKS.md, "bfloat16"). Backends without
# an entry (not measured) use float32.
AUTO_PRECISION = {"cpu": "float32"}


def resolve_precision(precision: Optional[str],
                      backend: Optional[str] = None) -> str:
  """'float32' or 'bfloat16' for ``precision`` on ``backend``.

  Args:
    precision: one of PRECISIONS; None = 'auto'.
    backend: jax backend name (None = ``jax.default_backend()``).
  """
  precision = "auto" if precision is None else str(precision)
  return model_lib.resolve_dtype(precision, backend, AUTO_PRECISION,
                                 "precision").name


def create_model(config: ml_collections.ConfigDict,
                 dtype: Optional[Any] = None) -> model_lib.SGFAN:
  """The flax module of ``config`` (N from ``config.data.layout``).

  ``dtype``: compute dtype overriding ``config.model.dtype`` (e.g. a
  bfloat16 forward of a float32-trained model: same variables, since the
  parameters and BatchNorm statistics are float32 in every compute dtype).
  """
  num_points = layouts.get_layout(config.data.layout).num_points
  model = model_lib.create_model(config.model, num_points)
  if dtype is not None:
    model = model.clone(dtype=jnp.dtype(dtype))
  return model


def init_variables(model: model_lib.SGFAN, input_size: int,
                   rng: jax.Array) -> Dict[str, Any]:
  """Fresh ``{"params", "batch_stats"}`` for ``model``."""
  variables = jax.jit(functools.partial(model.init, train=False))(
      rng, jnp.zeros((1, input_size, input_size, 3), jnp.float32))
  return {"params": variables["params"],
          "batch_stats": variables["batch_stats"]}


def predict_maps(apply_fn: Callable, variables: Dict[str, Any],
                 images: jax.Array):
  """Network outputs in inference mode (Sec. 3.1).

  Args:
    apply_fn: ``model.apply``.
    variables: ``{"params", "batch_stats"}``.
    images: float32 ``[B, H, W, 3]``, ``image / 255 - 0.5``.

  Returns:
    ``(heatmaps, score_maps)``, each float32 ``[B, H, W, N]``.
  """
  return apply_fn({"params": variables["params"],
                   "batch_stats": variables["batch_stats"]}, images,
                  train=False)


def crops_to_input(crops: jax.Array, spec: InferenceSpec):
  """Stored crops ``[B, S, S, 3]`` uint8 -> network input and its transform.

  Returns:
    images float32 ``[B, input, input, 3]`` and out_to_crop ``[B, 2, 3]``
    (network coordinates -> crop coordinates).
  """
  zeros = jnp.zeros((crops.shape[0], 1, 2), jnp.float32)
  images, _, out_to_crop = augment.eval_transform(
      crops, zeros, window_side=spec.window_side, out_size=spec.input_size)
  return images, out_to_crop


def output_to_image(points: jax.Array, out_to_crop: jax.Array,
                    crop_to_image: jax.Array) -> jax.Array:
  """Network-output coordinates ``[B, N, 2]`` -> original-image coordinates."""
  return augment.apply_affine(
      points, augment.compose_affine(crop_to_image, out_to_crop))


def landmarks_from_maps(heatmaps: jax.Array, score_maps: jax.Array,
                        dictionary: Optional[ksvd.ShapeDictionary],
                        spec: InferenceSpec) -> Dict[str, jax.Array]:
  """Eq. 4 decoding, Eq. 1 confidence and Eq. 2 refinement on output maps.

  Args:
    heatmaps, score_maps: ``[B, M, M, N]`` (M = input side / stride).
    dictionary: device shape dictionary, or None (no refinement).
    spec: :class:`InferenceSpec`.

  Returns:
    'raw_points' ``[B, N, 2]`` (Eq. 4, network-input coordinates), 'points'
    (refined, input coordinates; = raw_points without a dictionary),
    'confidence' ``[B, N]`` in [0, 1] (Eq. 1, on the output map), 'peak'
    ``[B, N]`` heatmap maxima.
  """
  raw, peak = decode.decode_heatmaps(heatmaps, spec.subpixel)
  conf = confidence_lib.landmark_confidence(score_maps, raw,
                                            spec.map_weight_radius)
  raw = map_to_input(raw, spec.output_stride)
  if dictionary is not None:
    points = refine_lib.refine_shapes(
        raw, conf, dictionary, num_neighbors=spec.refine_neighbors,
        weight_threshold=spec.refine_threshold, mode=spec.refine_mode,
        ridge=spec.refine_ridge)
  else:
    points = raw
  return {"raw_points": raw, "points": points, "confidence": conf,
          "peak": peak}


def predict_crops(apply_fn: Callable, variables: Dict[str, Any],
                  crops: jax.Array, crop_to_image: jax.Array,
                  dictionary: Optional[ksvd.ShapeDictionary], *,
                  spec: InferenceSpec) -> Dict[str, jax.Array]:
  """Landmarks of a batch of face crops, in original-image coordinates.

  Args:
    apply_fn: ``model.apply``.
    variables: ``{"params", "batch_stats"}``.
    crops: uint8 ``[B, S, S, 3]`` crops in the stored convention
      (``crop.crop_image``; docs/DESIGN.md).
    crop_to_image: ``[B, 2, 3]`` affine crop -> original image.
    dictionary: device shape dictionary (``ksvd.as_device``) or None.
    spec: :class:`InferenceSpec` (static).

  Returns:
    :func:`landmarks_from_maps`'s dict, points in image coordinates.
  """
  images, out_to_crop = crops_to_input(crops, spec)
  heat, score = predict_maps(apply_fn, variables, images)
  out = landmarks_from_maps(heat, score, dictionary, spec)
  for key in ("raw_points", "points"):
    out[key] = output_to_image(out[key], out_to_crop, crop_to_image)
  return out


def make_predict_fn(model: model_lib.SGFAN, spec: InferenceSpec):
  """Jitted ``fn(variables, crops, crop_to_image, dictionary) -> dict``."""
  return jax.jit(functools.partial(predict_crops, model.apply, spec=spec))


# ---------------------------------------------------------------- loading


def load_checkpoint_variables(workdir: str, step: Optional[int] = None):
  """Parameters and batch statistics of a training checkpoint.

  Args:
    workdir: a training workdir (``WORKDIR/checkpoints``, orbax).
    step: checkpoint step; None = the best by validation NME, else the
      latest.

  Returns:
    ``(variables, step)``, variables ``{"params", "batch_stats"}`` as numpy.

  Raises:
    ModelFileError: no checkpoint there.
  """
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    raise ModelFileError(f"{workdir}: no checkpoints folder ({directory}); "
                         "train first or give a model folder")
  ckpt = ckpt_lib.Checkpointer(workdir, read_only=True)
  try:
    if step is None:
      step = ckpt.best_step()
      if step is None:
        step = ckpt.latest_step()
    if step is None:
      raise ModelFileError(f"{directory}: no checkpoint saved yet")
    tree = ckpt.restore_raw(step)
  finally:
    ckpt.close()
  try:
    variables = {"params": tree["params"], "batch_stats": tree["batch_stats"]}
  except (KeyError, TypeError):
    raise ModelFileError(f"{directory}/{step}: not an sgfan-jax TrainState "
                         "checkpoint (no params/batch_stats)") from None
  return jax.tree_util.tree_map(np.asarray, variables), int(step)


def read_config(path: str) -> ml_collections.ConfigDict:
  """A config saved as JSON (``config.json`` of a workdir or model folder).

  The saved values are laid over ``configs/default.py``, so a model saved
  before a field existed gets that field's documented default.
  """
  try:
    with open(path) as f:
      saved = json.load(f)
  except FileNotFoundError:
    raise ModelFileError(f"{path}: missing (the config the model was "
                         "trained with)") from None
  except json.JSONDecodeError as e:
    raise ModelFileError(f"{path}: not valid JSON ({e})") from None
  config = default_config.get_config()
  _overlay(config, saved)
  return config


def _overlay(config: ml_collections.ConfigDict, saved: Dict[str, Any]):
  """Writes ``saved`` values into ``config`` (JSON lists -> tuples)."""
  for key, value in saved.items():
    if isinstance(value, dict) and isinstance(config.get(key),
                                              ml_collections.ConfigDict):
      _overlay(config[key], value)
      continue
    if isinstance(value, list):
      value = tuple(value)
    with config.unlocked():
      if key in config and config[key] is not None and value is not None:
        config[key] = type(config[key])(value) if isinstance(
            config[key], (int, float, str, bool, tuple)) else value
      else:
        config[key] = value


def default_crop_metadata(config) -> Dict[str, Any]:
  """Crop geometry of the TFDS builders (``sgfan_jax.crop`` constants)."""
  return {"crop_size": crop.CROP_SIZE, "crop_context": crop.CROP_CONTEXT,
          "layout": str(config.data.layout)}


def write_dataset_meta(workdir: str, metadata: Dict[str, Any]) -> None:
  """Records the training data's crop geometry in a workdir."""
  keep = {k: metadata[k] for k in ("crop_size", "crop_context", "layout")}
  with open(os.path.join(workdir, DATASET_META_FILE), "w") as f:
    json.dump(keep, f, indent=2)


def read_dataset_meta(workdir: str, config) -> Dict[str, Any]:
  """The crop geometry a workdir's model was trained with."""
  path = os.path.join(workdir, DATASET_META_FILE)
  if not os.path.exists(path):
    return default_crop_metadata(config)
  with open(path) as f:
    return json.load(f)


@dataclasses.dataclass
class ModelBundle:
  """Everything inference needs, loaded from a model folder or workdir."""
  variables: Dict[str, Any]          # {"params", "batch_stats"} (numpy)
  config: ml_collections.ConfigDict  # the training config
  metadata: Dict[str, Any]           # crop_size, crop_context, layout, ...
  dictionary: Optional[ksvd.ShapeDictionary]   # host arrays, or None
  source: str                        # where it was loaded from


def load_workdir(workdir: str, step: Optional[int] = None) -> ModelBundle:
  """A training workdir: its config.json, checkpoint and shape dictionary."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  config = read_config(os.path.join(workdir, "config.json"))
  variables, step = load_checkpoint_variables(workdir, step)
  dic_path = os.path.join(workdir, DICTIONARY_FILE)
  dictionary = (ksvd.load_dictionary(dic_path)
                if config.refine.enabled and os.path.exists(dic_path)
                else None)
  meta = dict(read_dataset_meta(workdir, config), step=step)
  return ModelBundle(variables, config, meta, dictionary,
                     f"{workdir} (step {step})")


def save_model(directory: str, variables: Dict[str, Any], config,
               metadata: Dict[str, Any],
               dictionary: Optional[ksvd.ShapeDictionary] = None) -> None:
  """Writes a self-contained model folder (what load_model reads)."""
  os.makedirs(directory, exist_ok=True)
  variables = {"params": variables["params"],
               "batch_stats": variables["batch_stats"]}
  host = jax.tree_util.tree_map(np.asarray, variables)
  with open(os.path.join(directory, VARIABLES_FILE), "wb") as f:
    f.write(flax.serialization.msgpack_serialize(
        flax.serialization.to_state_dict(host)))
  with open(os.path.join(directory, CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  with open(os.path.join(directory, META_FILE), "w") as f:
    json.dump(metadata, f, indent=2, sort_keys=True)
  if dictionary is not None:
    ksvd.save_dictionary(os.path.join(directory, DICTIONARY_FILE), dictionary)


def set_model_config_value(directory: str, section: str, key: str,
                           value: Any) -> str:
  """Stores ``config.<section>.<key> = value`` in a model folder's
  config.json (a value chosen on validation data by a calibration script);
  returns the file's path."""
  path = os.path.join(directory, CONFIG_FILE)
  with open(path) as f:
    saved = json.load(f)
  saved.setdefault(section, {})[key] = value
  with open(path, "w") as f:
    f.write(json.dumps(saved, indent=2) + "\n")
  return path


def load_model(directory: str) -> ModelBundle:
  """Reads a model folder written by :func:`save_model`.

  Raises:
    ModelFileError: a missing or corrupt file (the message names it).
  """
  directory = os.path.abspath(os.path.expanduser(directory))
  if not os.path.isdir(directory):
    raise ModelFileError(f"model folder not found: {directory}")
  config = read_config(os.path.join(directory, CONFIG_FILE))
  path = os.path.join(directory, VARIABLES_FILE)
  try:
    with open(path, "rb") as f:
      variables = flax.serialization.msgpack_restore(f.read())
  except FileNotFoundError:
    raise ModelFileError(f"{path}: missing") from None
  except Exception as e:  # msgpack raises several kinds on corrupt data
    raise ModelFileError(f"{path}: cannot be read ({e})") from None
  if not isinstance(variables, dict):
    raise ModelFileError(f"{path}: expected params and batch_stats, found "
                         f"a {type(variables).__name__}")
  if set(variables) != {"params", "batch_stats"}:
    raise ModelFileError(f"{path}: expected params and batch_stats, found "
                         f"{sorted(variables)}")
  meta_path = os.path.join(directory, META_FILE)
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      metadata = json.load(f)
  else:
    metadata = default_crop_metadata(config)
  dic_path = os.path.join(directory, DICTIONARY_FILE)
  dictionary = (ksvd.load_dictionary(dic_path)
                if config.refine.enabled and os.path.exists(dic_path)
                else None)
  return ModelBundle(variables, config, metadata, dictionary, directory)


def check_variables(model: model_lib.SGFAN, variables: Dict[str, Any],
                    input_size: int, source: str) -> None:
  """Raises ModelFileError when ``variables`` do not fit ``model``."""
  expected = jax.eval_shape(
      lambda: init_variables(model, input_size, jax.random.PRNGKey(0)))
  want = jax.tree_util.tree_map(lambda x: tuple(x.shape), expected)
  try:
    got = jax.tree_util.tree_map(lambda x: tuple(np.shape(x)), variables)
  except Exception:  # pylint: disable=broad-except
    got = None
  if got != want:
    raise ModelFileError(
        f"{source}: the saved variables do not match the network of its "
        "config (different width, depth or number of landmarks?)")
