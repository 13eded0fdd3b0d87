"""Eq. 2 weighted exemplar search and face-shape reconstruction (Sec. 3.3).

Given a predicted shape ``S`` [N, 2] (image or map pixels; every step is
similarity-invariant, so any frame works), its Eq. 1 weights ``w`` [N] and the
K-SVD shape dictionary ``D_S`` (``ksvd.py``: K exemplar shapes [K, N, 2]),
for every face of a batch (vmapped, jitted, no Python loop over faces):

1. **Weights.** Eq. 2 applies ``W = diag(w_1..w_N, w_1..w_N)`` inside a squared
   norm, so point ``i`` enters every least-squares problem below with weight
   ``omega_i = w_i^2`` (clipped to [0, 1], plus a tiny floor so a face with
   all weights 0 stays defined), normalised to sum to 1.

2. **Search (Eq. 2).** For each exemplar ``d_j``, the weighted similarity
   transform (scale, rotation, translation; weighted Procrustes) that best
   maps the prediction onto the exemplar is found in closed form, and
   exemplars are ranked by the residual of that fit divided by the
   exemplar's weighted spread ``sum_i omega_i |d_ji - dbar_j|^2``::

     dist_j = 1 - rho_j^2,   rho_j^2 = (A_j^2 + B_j^2) / (|x_j|^2 |y|^2)

   with ``y``, ``x_j`` the prediction and exemplar centred at their weighted
   centroids, ``A_j = sum omega_i x_ji . y_i``, ``B_j = sum omega_i
   x_ji x y_i`` (2-D cross product) and ``|.|^2`` weighted squared norms.
   This is the weighted full Procrustes distance: symmetric (the same
   ranking results from aligning the exemplar onto the prediction), blind to
   pose, scale and position, and to the arbitrary norm/sign of K-SVD atoms
   (a sign flip is a 180-degree rotation). The ``k`` smallest are the
   neighbours ``s_1..s_k``.

3. **Reconstruction.** The prediction is normalised by its weighted centroid
   ``c`` and weighted RMS radius ``s``: ``S' = (S - c) / s``. Each neighbour
   is similarity-aligned onto ``S'`` (same closed form), giving ``e_j``
   [N, 2]. The coefficients solve the ridge-regularised weighted least
   squares (Fig. 4, "reconstruction coefficients by least squares")::

     min_a  sum_i omega_i |S'_i - sum_j a_j e_ji|^2 + ridge * |a - 1/k|^2

   The ridge pulls towards the plain average of the aligned neighbours (not
   towards 0, which would shrink the face); in the normalised frame it is
   dimensionless. ``R' = sum_j a_j e_j`` is mapped back to the input frame
   by the inverse normalisation ``R = s R' + c``.

4. **Final shape** (``mode``):

   * ``'threshold'``: ``out_i = S_i`` if ``w_i >= weight_threshold`` else
     ``R_i``: reliable landmarks are kept exactly, unreliable ones replaced;
     a face whose weights are all above the threshold is returned unchanged.
   * ``'blend'``: ``out_i = w_i S_i + (1 - w_i) R_i`` (``w`` clipped to
     [0, 1]): every point moves towards the reconstruction in proportion to
     its unreliability.
"""

import functools
from typing import Dict, Union

import chex
import jax
import jax.numpy as jnp

from sgfan_jax import ksvd

MODES = ("threshold", "blend")
# omega floor: keeps weighted centroids / spreads defined when every w is 0.
_OMEGA_FLOOR = 1e-6
# Guards divisions by (weighted) squared norms of degenerate shapes.
_EPS = 1e-12


def _atoms_of(dictionary: Union[ksvd.ShapeDictionary, jax.Array]
              ) -> jax.Array:
  if isinstance(dictionary, ksvd.ShapeDictionary):
    return jnp.asarray(dictionary.atoms)
  return jnp.asarray(dictionary)


def point_weights(weights: jax.Array) -> jax.Array:
  """Eq. 2 least-squares weights: [..., N] w -> [..., N] omega (sum 1)."""
  omega = jnp.clip(weights, 0.0, 1.0) ** 2 + _OMEGA_FLOOR
  return omega / jnp.sum(omega, axis=-1, keepdims=True)


def _procrustes_terms(points: jax.Array, omega: jax.Array, atoms: jax.Array):
  """Closed-form weighted similarity fit of every atom onto the prediction.

  Args:
    points: [N, 2] prediction.
    omega: [N] normalised weights.
    atoms: [K, N, 2] exemplars.

  Returns:
    dict with y [N, 2] (prediction centred at its weighted centroid),
    centroid [2], y2 (weighted squared norm of y), xc [K, N, 2] (centred
    atoms), x2 [K], a [K] (dot term), b [K] (cross term).
  """
  centroid = jnp.sum(omega[:, None] * points, axis=0)
  y = points - centroid
  y2 = jnp.sum(omega * jnp.sum(y * y, axis=-1))
  atom_c = jnp.einsum("n,knd->kd", omega, atoms)
  xc = atoms - atom_c[:, None, :]
  x2 = jnp.einsum("n,knd->k", omega, xc * xc)
  a = jnp.einsum("n,knd,nd->k", omega, xc, y)
  b = jnp.einsum("n,kn->k", omega,
                 xc[..., 0] * y[None, :, 1] - xc[..., 1] * y[None, :, 0])
  return dict(y=y, centroid=centroid, y2=y2, xc=xc, x2=x2, a=a, b=b)


def _refine_one(points: jax.Array, weights: jax.Array, atoms: jax.Array,
                num_neighbors: int, weight_threshold, mode: str, ridge
                ) -> Dict[str, jax.Array]:
  """One face: points [N, 2], weights [N], atoms [K, N, 2]."""
  num_points = points.shape[0]
  omega = point_weights(weights)
  t = _procrustes_terms(points, omega, atoms)
  y2 = jnp.maximum(t["y2"], _EPS)
  x2 = jnp.maximum(t["x2"], _EPS)
  dist = 1.0 - (t["a"] ** 2 + t["b"] ** 2) / (x2 * y2)            # [K]
  _, nbr = jax.lax.top_k(-dist, num_neighbors)                     # [k]
  # Align neighbours onto the normalised prediction y' = y / s.
  scale = jnp.sqrt(y2)
  ca = t["a"][nbr] / (x2[nbr] * scale)                             # [k]
  cb = t["b"][nbr] / (x2[nbr] * scale)
  xs = t["xc"][nbr]                                                # [k, N, 2]
  aligned = jnp.stack(
      [ca[:, None] * xs[..., 0] - cb[:, None] * xs[..., 1],
       cb[:, None] * xs[..., 0] + ca[:, None] * xs[..., 1]], axis=-1)
  target = t["y"] / scale                                          # [N, 2]
  e = aligned.reshape(num_neighbors, 2 * num_points).T             # [2N, k]
  om2 = jnp.repeat(omega, 2)                                       # [2N]
  gram = e.T @ (om2[:, None] * e)
  rhs = e.T @ (om2 * target.reshape(-1))
  prior = jnp.full((num_neighbors,), 1.0 / num_neighbors)
  coef = jnp.linalg.solve(gram + ridge * jnp.eye(num_neighbors),
                          rhs + ridge * prior)
  recon = (e @ coef).reshape(num_points, 2) * scale + t["centroid"]
  if mode == "threshold":
    keep = (weights >= weight_threshold)[:, None]
    refined = jnp.where(keep, points, recon)
  elif mode == "blend":
    wc = jnp.clip(weights, 0.0, 1.0)[:, None]
    refined = wc * points + (1.0 - wc) * recon
  else:
    raise ValueError(f"refine mode must be one of {MODES}, got {mode!r}")
  return dict(refined=refined, reconstruction=recon, neighbors=nbr,
              distances=dist, coefficients=coef)


@functools.partial(jax.jit, static_argnames=("num_neighbors", "mode"))
def refine_shapes_with_details(
    points: jax.Array, weights: jax.Array,
    dictionary: Union[ksvd.ShapeDictionary, jax.Array], *,
    num_neighbors: int, weight_threshold: float, mode: str,
    ridge: float) -> Dict[str, jax.Array]:
  """Like :func:`refine_shapes`, returning the intermediate results too.

  Returns:
    dict: ``refined`` [B, N, 2], ``reconstruction`` [B, N, 2] (R, input
    frame), ``neighbors`` [B, k] int32 (atom indices, nearest first),
    ``distances`` [B, K] (Eq. 2 search distances), ``coefficients`` [B, k].
  """
  atoms = _atoms_of(dictionary).astype(jnp.float32)
  chex.assert_rank(points, 3)
  batch, num_points, _ = points.shape
  chex.assert_shape(points, (batch, num_points, 2))
  chex.assert_shape(weights, (batch, num_points))
  chex.assert_shape(atoms, (None, num_points, 2))
  if not 1 <= num_neighbors <= atoms.shape[0]:
    raise ValueError(f"num_neighbors must be in [1, {atoms.shape[0]}] (the "
                     f"dictionary size), got {num_neighbors}")
  if mode not in MODES:
    raise ValueError(f"refine mode must be one of {MODES}, got {mode!r}")
  fn = functools.partial(_refine_one, atoms=atoms, num_neighbors=num_neighbors,
                         weight_threshold=weight_threshold, mode=mode,
                         ridge=ridge)
  out = jax.vmap(fn)(points.astype(jnp.float32), weights.astype(jnp.float32))
  chex.assert_shape(out["refined"], (batch, num_points, 2))
  return out


def refine_shapes(points: jax.Array, weights: jax.Array,
                  dictionary: Union[ksvd.ShapeDictionary, jax.Array], *,
                  num_neighbors: int, weight_threshold: float, mode: str,
                  ridge: float) -> jax.Array:
  """Refines predicted shapes with the shape dictionary (Eq. 2 + Fig. 4).

  Args:
    points: [B, N, 2] predicted landmarks (x, y), any pixel frame.
    weights: [B, N] Eq. 1 weights in [0, 1].
    dictionary: ShapeDictionary (its ``atoms`` [K, N, 2]) or the atoms array;
      passed as an argument (traced), not baked in as a constant.
    num_neighbors: k nearest exemplars (static).
    weight_threshold: w below this = unreliable point ('threshold' mode).
    mode: 'threshold' or 'blend' (static; see the module docstring).
    ridge: ridge regulariser of the coefficients (normalised frame).

  Returns:
    [B, N, 2] refined landmarks, same frame as ``points``.
  """
  return refine_shapes_with_details(
      points, weights, dictionary, num_neighbors=num_neighbors,
      weight_threshold=weight_threshold, mode=mode, ridge=ridge)["refined"]
