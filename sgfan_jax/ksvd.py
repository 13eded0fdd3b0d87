"""K-SVD shape dictionary D_S (Sec. 3.3): build offline, save, load.

The paper (following Liu et al. [18]) runs K-SVD (Aharon et al. [1]) over all
training shapes and uses the atoms as "representative face shapes" D_S, among
which Eq. 2 searches the k nearest exemplars of a predicted shape. This module
builds D_S on the host in numpy (an offline step); the search and
reconstruction at inference are JAX (``refine.py``).

Normalised frame
----------------
Training shapes [M, N, 2] are brought to a common frame before K-SVD by
generalised Procrustes analysis (GPA):

1. each shape is centred (centroid at the origin) and scaled to unit
   Frobenius norm (``sum_i |p_i|^2 = 1``);
2. each shape is rotated (rotation only; its norm stays 1) onto the current
   mean shape; the mean is re-estimated, re-normalised and re-oriented so that
   the line from the left to the right eye centre (``layouts``) is horizontal,
   pointing to +x; repeated until the mean stops moving.

Rotation alignment removes in-plane head roll, which K-SVD would otherwise
have to spend atoms on; the search in ``refine.py`` is similarity-invariant
anyway, so the frame only decides what the atoms describe, not how a
prediction is matched. Each normalised shape is a signal ``y in R^{2N}``
(flattened ``x0, y0, x1, y1, ...``) with ``|y| = 1``.

K-SVD
-----
``D`` [2N, K] with unit-norm columns is initialised with K distinct training
signals (seeded) and alternates (``ksvd_iterations`` times):

* sparse coding by orthogonal matching pursuit (OMP): each signal gets at most
  ``sparsity`` atoms, chosen greedily by the largest |correlation| with the
  residual, coefficients re-fitted by least squares after each pick
  (vectorised over all signals);
* dictionary update, one atom at a time: the error of the signals using atom
  ``k`` with atom ``k``'s contribution added back, ``E_k``, is replaced by its
  best rank-1 approximation ``sigma u v^T`` (SVD): ``d_k = u``, the coefficients
  of those signals ``= sigma v``. An atom no signal uses is replaced by the
  worst-represented training signal. (The usual "clear near-duplicate atoms"
  heuristic is off for shape dictionaries: normalised 300-W training shapes
  have a median pairwise cosine of 0.98 and 15% of pairs exceed 0.99, so it
  would throw away good atoms; ``ksvd(duplicate_cosine=...)`` enables it.)

Atoms as exemplar shapes
------------------------
K-SVD atoms are unit-norm and only defined up to sign. Because the signals
are shapes in the normalised frame (not shape *differences* from a mean), the
atoms live in the same space: each atom reshaped to [N, 2] is a centred
(linear combinations of centred shapes stay centred) unit-norm point set. In
2-D, negating every coordinate is a rotation by 180 degrees, and a uniform
scale is a scale: both are absorbed by the similarity alignment that Eq. 2
search and the reconstruction in ``refine.py`` apply to every exemplar. So
atoms are used as exemplar shapes directly, with no re-scaling; the sign is
nevertheless canonicalised (``<atom, mean shape> >= 0``) so that stored atoms
look like upright faces. Measured on the 1,911 300-W training shapes (face300w:train) with
the default config (K = 200, sparsity 3), the atoms are face-like: cosine
with the mean shape >= 0.93, median 0.99 (``build_dictionary`` records both
in the file's ``config_json``; see
``benchmarks/results/occlusion_experiment.md``). With sparsity 1 K-SVD
reduces to gain-shape vector quantisation and every atom is a cluster's
principal shape; on the held-out occlusion sweep sparsity 1-5 perform alike.

Files
-----
``save_dictionary`` writes an ``.npz`` with ``atoms`` [K, N, 2] float32,
``mean_shape`` [N, 2], ``layout`` (name), ``frame`` (a description of the
frame above), ``config_json`` (the K-SVD settings and number of training
shapes) and ``format_version``. ``load_dictionary`` validates all of it and
raises ``DictionaryFileError`` naming the file for anything wrong.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Dict, Optional, Tuple, Union

from flax import struct
import jax
import ml_collections
import numpy as np

from sgfan_jax import layouts

PathLike = Union[str, os.PathLike]

FORMAT_VERSION = 1
FRAME_DESCRIPTION = (
    "GPA frame: centred, unit Frobenius norm, rotated onto the mean shape; "
    "mean shape eye line horizontal (left->right eye = +x)")
# Settings copied from config.refine into the file; a stored dictionary built
# with other values of these is not silently reused.
_KSVD_FIELDS = ("dictionary_size", "sparsity", "ksvd_iterations", "ksvd_seed")
# GPA stops when the mean shape moves less than this (unit-norm shapes).
_GPA_TOL = 1e-10
_GPA_MAX_ITERS = 50
# Tikhonov term keeping OMP's small Gram systems solvable with repeated atoms.
_OMP_JITTER = 1e-10


class DictionaryFileError(ValueError):
  """A shape-dictionary file that is missing, corrupt or inconsistent."""


@struct.dataclass
class ShapeDictionary:
  """Shape dictionary D_S: a pytree whose arrays can be passed to jit.

  Attributes:
    atoms: [K, N, 2] exemplar shapes (unit Frobenius norm, centred, in the
      normalised frame of the module docstring).
    mean_shape: [N, 2] GPA mean of the training shapes (same frame).
    layout: landmark layout name (static).
    info_json: JSON text with the build settings (static).
  """
  atoms: Any
  mean_shape: Any
  layout: str = struct.field(pytree_node=False, default="")
  info_json: str = struct.field(pytree_node=False, default="{}")

  @property
  def info(self) -> dict:
    return json.loads(self.info_json)

  @property
  def num_atoms(self) -> int:
    return int(self.atoms.shape[0])


# --------------------------------------------------------------------- frame
def _rotate(shapes: np.ndarray, angle: np.ndarray) -> np.ndarray:
  """Rotates [..., N, 2] by angle [...] (radians, counter-clockwise)."""
  c, s = np.cos(angle)[..., None], np.sin(angle)[..., None]
  x, y = shapes[..., 0], shapes[..., 1]
  return np.stack([c * x - s * y, s * x + c * y], axis=-1)


def _centre_unit(shapes: np.ndarray) -> np.ndarray:
  """Centres [M, N, 2] shapes and scales each to unit Frobenius norm."""
  centred = shapes - shapes.mean(axis=-2, keepdims=True)
  norm = np.sqrt(np.sum(centred ** 2, axis=(-2, -1), keepdims=True))
  if np.any(norm < 1e-12):
    raise ValueError("degenerate training shape (all points equal)")
  return centred / norm


def _level_eyes(shape: np.ndarray, layout: Optional[layouts.LandmarkLayout]
                ) -> np.ndarray:
  """Rotates one centred [N, 2] shape so the eye line points to +x."""
  if layout is None:
    return shape
  left = shape[list(layout.left_eye)].mean(axis=0)
  right = shape[list(layout.right_eye)].mean(axis=0)
  d = right - left
  return _rotate(shape, -np.arctan2(d[1], d[0]))


def normalize_shapes(shapes: np.ndarray, layout_name: Optional[str] = None
                     ) -> Tuple[np.ndarray, np.ndarray]:
  """Generalised Procrustes analysis into the normalised frame.

  Args:
    shapes: [M, N, 2] training shapes (any pixel frame).
    layout_name: landmark layout (for the eye line orientation of the mean);
      None = looked up by N, no orientation fix if N has no layout.

  Returns:
    (normalised [M, N, 2] float64, mean_shape [N, 2] float64), each shape
    centred with unit Frobenius norm and rotated onto the mean shape.
  """
  shapes = np.asarray(shapes, np.float64)
  if shapes.ndim != 3 or shapes.shape[-1] != 2:
    raise ValueError(f"shapes must be [M, N, 2], got {shapes.shape}")
  layout = _find_layout(layout_name, shapes.shape[1])
  unit = _centre_unit(shapes)
  mean = _level_eyes(unit[0], layout)
  for _ in range(_GPA_MAX_ITERS):
    # Optimal rotation of x onto m: angle of sum conj(x) m (complex form).
    xc = unit[..., 0] + 1j * unit[..., 1]
    mc = mean[:, 0] + 1j * mean[:, 1]
    angle = np.angle(np.sum(np.conj(xc) * mc[None], axis=-1))
    aligned = _rotate(unit, angle)
    new_mean = aligned.mean(axis=0)
    new_mean /= np.sqrt(np.sum(new_mean ** 2))
    new_mean = _level_eyes(new_mean, layout)
    moved = np.sqrt(np.sum((new_mean - mean) ** 2))
    mean = new_mean
    if moved < _GPA_TOL:
      break
  xc = unit[..., 0] + 1j * unit[..., 1]
  mc = mean[:, 0] + 1j * mean[:, 1]
  angle = np.angle(np.sum(np.conj(xc) * mc[None], axis=-1))
  return _rotate(unit, angle), mean


def _find_layout(layout_name: Optional[str], num_points: int
                 ) -> Optional[layouts.LandmarkLayout]:
  if layout_name:
    layout = layouts.get_layout(layout_name)
    if layout.num_points != num_points:
      raise ValueError(f"layout {layout_name!r} has {layout.num_points} "
                       f"points, shapes have {num_points}")
    return layout
  try:
    return layouts.get_layout(num_points)
  except ValueError:
    return None


# --------------------------------------------------------------------- K-SVD
def omp(dictionary: np.ndarray, signals: np.ndarray,
        sparsity: int) -> np.ndarray:
  """Orthogonal matching pursuit, vectorised over signals.

  Args:
    dictionary: [d, K] with unit-norm columns.
    signals: [d, M].
    sparsity: atoms per signal (T0).

  Returns:
    [K, M] codes with at most ``sparsity`` non-zeros per column, each column
    the least-squares fit of its signal on its selected atoms.
  """
  d, k = dictionary.shape
  m = signals.shape[1]
  sparsity = int(min(sparsity, k, d))
  gram = dictionary.T @ dictionary                        # [K, K]
  dty = dictionary.T @ signals                            # [K, M]
  cols = np.arange(m)
  chosen = np.zeros((m, sparsity), np.int64)
  codes = np.zeros((k, m))
  residual = signals
  for t in range(sparsity):
    corr = np.abs(dictionary.T @ residual)                # [K, M]
    if t:
      corr[chosen[:, :t].T, cols[None, :]] = -1.0         # never re-pick
    chosen[:, t] = np.argmax(corr, axis=0)
    sel = chosen[:, :t + 1]                               # [M, t+1]
    g = gram[sel[:, :, None], sel[:, None, :]]            # [M, t+1, t+1]
    g = g + _OMP_JITTER * np.eye(t + 1)
    b = dty[sel, cols[:, None]]                           # [M, t+1]
    coef = np.linalg.solve(g, b[..., None])[..., 0]
    codes = np.zeros((k, m))
    codes[sel.T, cols[None, :]] = coef.T
    residual = signals - dictionary @ codes
  return codes


def ksvd(signals: np.ndarray, num_atoms: int, sparsity: int, iterations: int,
         seed: int = 0, init: Optional[np.ndarray] = None,
         duplicate_cosine: Optional[float] = None
         ) -> Tuple[np.ndarray, np.ndarray]:
  """K-SVD (Aharon, Elad & Bruckstein 2006).

  Minimises ``|Y - D X|_F^2`` s.t. every column of X has at most ``sparsity``
  non-zeros and D has unit-norm columns.

  Args:
    signals: Y, [d, M].
    num_atoms: K.
    sparsity: T0, non-zeros per code (OMP).
    iterations: sparse-coding / dictionary-update rounds.
    seed: seeds the choice of initial atoms (K distinct signals).
    init: optional [d, K] initial dictionary (columns normalised here).
    duplicate_cosine: if set, after each dictionary update an atom whose
      |cosine| with an earlier atom exceeds this is replaced by the
      worst-represented signal (the "dictionary clearing" step of Aharon et
      al.); None disables it (see the module docstring for why the shape
      dictionary does not use it).

  Returns:
    (D [d, K] unit-norm columns, X [K, M] the codes of the last OMP pass).
  """
  signals = np.asarray(signals, np.float64)
  d, m = signals.shape
  rng = np.random.default_rng(seed)
  if init is None:
    if num_atoms > m:
      raise ValueError(f"dictionary size {num_atoms} exceeds the number of "
                       f"training signals {m}")
    init = signals[:, rng.choice(m, size=num_atoms, replace=False)]
  dic = np.array(init, np.float64)
  dic /= np.maximum(np.linalg.norm(dic, axis=0, keepdims=True), 1e-12)
  codes = omp(dic, signals, sparsity)
  for _ in range(iterations):
    codes = omp(dic, signals, sparsity)
    replaced = set()
    for k in rng.permutation(num_atoms):
      users = np.nonzero(codes[k])[0]
      if users.size == 0:
        err = np.sum((signals - dic @ codes) ** 2, axis=0)
        err[list(replaced)] = -1.0
        worst = int(np.argmax(err))
        replaced.add(worst)
        dic[:, k] = signals[:, worst] / max(np.linalg.norm(signals[:, worst]),
                                            1e-12)
        continue
      err_k = (signals[:, users] - dic @ codes[:, users]
               + np.outer(dic[:, k], codes[k, users]))
      u, s, vt = np.linalg.svd(err_k, full_matrices=False)
      dic[:, k] = u[:, 0]
      codes[k, users] = s[0] * vt[0]
    if duplicate_cosine is not None:
      _clear_duplicates(dic, signals, codes, duplicate_cosine)
  codes = omp(dic, signals, sparsity)
  return dic, codes


def _clear_duplicates(dic: np.ndarray, signals: np.ndarray, codes: np.ndarray,
                      max_cosine: float) -> None:
  """Replaces (in place) atoms nearly parallel to an earlier atom."""
  cos = np.abs(dic.T @ dic)
  np.fill_diagonal(cos, 0.0)
  dup = [k for k in range(dic.shape[1]) if np.any(cos[k, :k] > max_cosine)]
  if not dup:
    return
  residual = signals - dic @ codes
  err = np.sum(residual ** 2, axis=0)
  for k, worst in zip(dup, np.argsort(-err)):
    dic[:, k] = residual[:, worst] / max(np.sqrt(err[worst]), 1e-12)


# ------------------------------------------------------------ the dictionary
def ksvd_settings(refine_cfg: ml_collections.ConfigDict) -> Dict[str, int]:
  """The K-SVD fields of ``config.refine`` (those recorded in the file)."""
  return {f: int(refine_cfg[f]) for f in _KSVD_FIELDS}


def build_dictionary(shapes: np.ndarray,
                     refine_cfg: ml_collections.ConfigDict, *,
                     layout_name: Optional[str] = None,
                     **overrides: int) -> ShapeDictionary:
  """Builds D_S from training shapes (GPA frame + K-SVD).

  Args:
    shapes: [M, N, 2] training shapes (pixel coordinates, any frame).
    refine_cfg: ``config.refine``: ``dictionary_size``, ``sparsity``,
      ``ksvd_iterations``, ``ksvd_seed``.
    layout_name: landmark layout (default: looked up by N).
    **overrides: any of those four fields, replacing the config's value
      (e.g. a sweep over ``dictionary_size``).

  Returns:
    ShapeDictionary with atoms [K, N, 2] float32 and mean_shape [N, 2].
  """
  unknown = sorted(set(overrides) - set(_KSVD_FIELDS))
  if unknown:
    raise TypeError(f"unknown K-SVD setting(s) {unknown}; settings: "
                    f"{list(_KSVD_FIELDS)}")
  settings = ksvd_settings(refine_cfg)
  settings.update({k: int(v) for k, v in overrides.items()})
  shapes = np.asarray(shapes, np.float64)
  if shapes.ndim != 3 or shapes.shape[-1] != 2:
    raise ValueError(f"training shapes must be [M, N, 2], got {shapes.shape}")
  if not np.all(np.isfinite(shapes)):
    raise ValueError("training shapes contain non-finite values")
  size = settings["dictionary_size"]
  m, n, _ = shapes.shape
  layout = _find_layout(layout_name, n)
  normed, mean = normalize_shapes(shapes, layout.name if layout else None)
  signals = normed.reshape(m, 2 * n).T
  dic, _ = ksvd(signals, size, settings["sparsity"],
                settings["ksvd_iterations"], seed=settings["ksvd_seed"])
  atoms = dic.T.reshape(size, n, 2)
  sign = np.sign(np.sum(atoms * mean[None], axis=(1, 2)))
  atoms = atoms * np.where(sign == 0, 1.0, sign)[:, None, None]
  cos_mean = np.sum(atoms * mean[None], axis=(1, 2))
  info = dict(settings, num_training_shapes=m,
              atom_mean_cosine_min=float(cos_mean.min()),
              atom_mean_cosine_median=float(np.median(cos_mean)))
  logging.info("Built shape dictionary: %s", info)
  return ShapeDictionary(
      atoms=atoms.astype(np.float32), mean_shape=mean.astype(np.float32),
      layout=layout.name if layout else "", info_json=json.dumps(info))


def save_dictionary(path: PathLike, dictionary: ShapeDictionary) -> None:
  """Writes D_S to ``path`` (.npz; see the module docstring for the keys)."""
  path = os.fspath(path)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez(tmp, atoms=np.asarray(dictionary.atoms, np.float32),
           mean_shape=np.asarray(dictionary.mean_shape, np.float32),
           layout=np.array(dictionary.layout), frame=np.array(FRAME_DESCRIPTION),
           config_json=np.array(dictionary.info_json),
           format_version=np.array(FORMAT_VERSION))
  os.replace(tmp, path)


def load_dictionary(path: PathLike) -> ShapeDictionary:
  """Reads and validates a dictionary written by :func:`save_dictionary`.

  Raises:
    DictionaryFileError: missing file, not an .npz, missing keys, wrong
      shapes or non-finite values; the message names the file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DictionaryFileError(f"shape dictionary file not found: {path}")
  try:
    with np.load(path, allow_pickle=False) as data:
      contents = {k: data[k] for k in data.files}
  except Exception as e:  # zipfile / pickle / OS errors: report the file.
    raise DictionaryFileError(
        f"{path}: not a readable shape-dictionary .npz ({e})") from e
  required = ("atoms", "mean_shape", "layout", "frame", "config_json",
              "format_version")
  missing = [k for k in required if k not in contents]
  if missing:
    raise DictionaryFileError(f"{path}: not a shape dictionary (missing "
                              f"{missing}; found {sorted(contents)})")
  if int(contents["format_version"]) != FORMAT_VERSION:
    raise DictionaryFileError(
        f"{path}: format_version {int(contents['format_version'])}, this code "
        f"reads {FORMAT_VERSION}")
  atoms, mean = contents["atoms"], contents["mean_shape"]
  if atoms.ndim != 3 or atoms.shape[-1] != 2 or atoms.shape[0] < 1:
    raise DictionaryFileError(
        f"{path}: atoms must be [K, N, 2], got {atoms.shape}")
  if mean.shape != atoms.shape[1:]:
    raise DictionaryFileError(
        f"{path}: mean_shape {mean.shape} does not match atoms {atoms.shape}")
  if not (np.all(np.isfinite(atoms)) and np.all(np.isfinite(mean))):
    raise DictionaryFileError(f"{path}: non-finite values in the dictionary")
  layout = str(contents["layout"])
  if layout:
    try:
      lay = layouts.get_layout(layout)
    except ValueError as e:
      raise DictionaryFileError(f"{path}: {e}") from e
    if lay.num_points != atoms.shape[1]:
      raise DictionaryFileError(
          f"{path}: layout {layout!r} has {lay.num_points} points, atoms "
          f"have {atoms.shape[1]}")
  try:
    info = json.loads(str(contents["config_json"]))
  except json.JSONDecodeError as e:
    raise DictionaryFileError(f"{path}: bad config_json ({e})") from e
  return ShapeDictionary(atoms=atoms.astype(np.float32),
                         mean_shape=mean.astype(np.float32), layout=layout,
                         info_json=json.dumps(info))


def load_or_build_dictionary(path: PathLike,
                             shapes_fn: Callable[[], np.ndarray],
                             refine_cfg: ml_collections.ConfigDict,
                             layout_name: Optional[str] = None
                             ) -> ShapeDictionary:
  """Loads D_S from ``path``, or builds it from ``shapes_fn()`` and saves it.

  Args:
    path: the .npz (e.g. ``workdir/shape_dictionary.npz``).
    shapes_fn: called only when the file is missing; returns the training
      shapes [M, N, 2].
    refine_cfg: ``config.refine``; an existing file must have been built with
      the same ``dictionary_size``, ``sparsity``, ``ksvd_iterations`` and
      ``ksvd_seed`` (otherwise DictionaryFileError: delete it to rebuild).
    layout_name: landmark layout of the shapes (e.g. ``config.data.layout``).

  Returns:
    The ShapeDictionary.
  """
  path = os.fspath(path)
  if os.path.exists(path):
    dic = load_dictionary(path)
    info = dic.info
    want = ksvd_settings(refine_cfg)
    diff = {f: (info.get(f), want[f]) for f in _KSVD_FIELDS
            if info.get(f) != want[f]}
    if diff:
      raise DictionaryFileError(
          f"{path}: built with other settings (file, config): {diff}; delete "
          "it to rebuild")
    if layout_name and dic.layout and dic.layout != layout_name:
      raise DictionaryFileError(f"{path}: layout {dic.layout!r}, expected "
                                f"{layout_name!r}")
    return dic
  dic = build_dictionary(np.asarray(shapes_fn()), refine_cfg,
                         layout_name=layout_name)
  save_dictionary(path, dic)
  return dic


def as_device(dictionary: ShapeDictionary) -> ShapeDictionary:
  """Returns the dictionary with its arrays on the default device."""
  return dictionary.replace(atoms=jax.device_put(dictionary.atoms),
                            mean_shape=jax.device_put(dictionary.mean_shape))
