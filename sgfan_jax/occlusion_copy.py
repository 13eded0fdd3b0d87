"""A seeded, reproducible synthetically occluded copy of 300-W style faces.

For every face (image + 68-point ``.pts``) one occluder is painted over the
image (host side, numpy + PIL). The seeded RNG chooses, per face:

* the occluder **type**, uniformly from ``OCCLUDER_TYPES``:

  - ``texture``: a (rotated) rectangle of texture cut from another image of
    the set, from a different source photo than the face (so it cannot hold
    that face), and from outside that donor image's own face box where the
    donor image has room;
  - ``noise``: a (rotated) rectangle of random colour noise (1, 2 or 4 px
    blocks);
  - ``skin_ellipse`` / ``dark_ellipse``: a shaded ellipse of a skin tone /
    a dark colour;
  - ``hand``: a skin-coloured hand-like shape, a palm ellipse plus four
    finger capsules and a thumb capsule, pointing in a random direction;

* the **region** it is centred on, uniformly from ``REGIONS``: the eyes, the
  nose, the mouth, or one side of the jaw (points of the iBUG 68-point
  layout, ``sgfan_jax.layouts.IBUG_68``); the centre is the mean of those
  points plus a small jitter;
* its **size**: a target covered fraction drawn uniformly from
  ``[0.22, 0.38]``; the shape's scale is then bisected until the painted
  pixels inside the face box (the tight landmark box) are that fraction of
  the face box's pixels. The result always lies in ``[0.2, 0.4]`` (checked).

Geometry is a union of primitives (``ellipse``, ``rect``, ``capsule``; see
``inside``) stored in ``occlusion.json``. The painted mask is that geometry
sampled at the pixel centres (0-based pixel-centre convention,
docs/DESIGN.md); a landmark is **occluded** when its exact position lies
inside the geometry and inside the image. The *covered fraction* is the
number of masked pixels whose centres lie in the face box over the number of
image pixels whose centres lie in the face box.

Each face's RNG is seeded from ``(seed, crc32(relative path))``, so a face's
occluder does not depend on which other faces are processed (except for the
texture donor, drawn from the set). Same seed -> byte-identical output.

Command::

  python -m sgfan_jax.occlusion_copy --src /work/shared/data/300w \\
      --subsets=helen/testset,lfpw/testset --out DIR --seed 0

writes ``DIR/<subset>/<name>.jpg`` (the occluded image, JPEG quality 95; PNG
sources stay PNG), ``DIR/<subset>/<name>.pts`` (copied unchanged) and
``DIR/occlusion.json`` (per image: occluded point flags, occluder type,
region, covered fraction, geometry, donor), and prints a summary line.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import zlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
import numpy as np
from PIL import Image

from sgfan_jax import crop
from sgfan_jax import layouts
from sgfan_jax import occluders
from sgfan_jax import pts_io

OCCLUDER_TYPES = ("texture", "noise", "skin_ellipse", "dark_ellipse", "hand")
_L = layouts.IBUG_68.regions
REGIONS = {
    "eyes": _L["left_eye"] + _L["right_eye"],
    "nose": _L["nose"],
    "mouth": _L["mouth"],
    "left_jaw": _L["left_jaw"],
    "right_jaw": _L["right_jaw"],
}
COVERAGE_RANGE = (0.2, 0.4)
_TARGET_RANGE = (0.22, 0.38)
# The training occluders' skin tones (one table for both generators).
_SKIN_TONES = np.array(occluders.SKIN_TONES, float)
JPEG_QUALITY = 95
VERSION = 1  # bump when the generated occluders change

Primitive = Dict[str, float]


class OcclusionError(ValueError):
  """Bad input or an occluder that could not be placed; names the file."""


# ------------------------------------------------------------------ geometry


def inside(primitives: Sequence[Primitive], x, y) -> np.ndarray:
  """Whether points ``(x, y)`` (broadcast arrays) lie in the union.

  Primitives (angles in radians, counter-clockwise in the image's x/y axes):

  * ``ellipse``: ``cx, cy, rx, ry, angle``: ``(u/rx)^2 + (v/ry)^2 <= 1``
    with ``(u, v)`` the point relative to the centre, rotated by ``-angle``;
  * ``rect``: ``cx, cy, hw, hh, angle``: ``|u| <= hw`` and ``|v| <= hh``;
  * ``capsule``: ``x0, y0, x1, y1, r``: distance to the segment ``<= r``.
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  out = np.zeros(np.broadcast(x, y).shape, bool)
  for p in primitives:
    k = p["kind"]
    if k in ("ellipse", "rect"):
      c, s = math.cos(p["angle"]), math.sin(p["angle"])
      dx, dy = x - p["cx"], y - p["cy"]
      u, v = c * dx + s * dy, -s * dx + c * dy
      if k == "ellipse":
        out |= (u / p["rx"]) ** 2 + (v / p["ry"]) ** 2 <= 1.0
      else:
        out |= (np.abs(u) <= p["hw"]) & (np.abs(v) <= p["hh"])
    elif k == "capsule":
      ax, ay, bx, by = p["x0"], p["y0"], p["x1"], p["y1"]
      ex, ey = bx - ax, by - ay
      den = ex * ex + ey * ey
      t = ((x - ax) * ex + (y - ay) * ey) / den if den > 0 else 0.0 * x
      t = np.clip(t, 0.0, 1.0)
      out |= (x - ax - t * ex) ** 2 + (y - ay - t * ey) ** 2 <= p["r"] ** 2
    else:
      raise ValueError(f"unknown occluder primitive kind {k!r}")
  return out


def _bounds(primitives: Sequence[Primitive]) -> Tuple[float, float, float,
                                                       float]:
  """Conservative ``(x0, y0, x1, y1)`` of the union."""
  xs0, ys0, xs1, ys1 = [], [], [], []
  for p in primitives:
    if p["kind"] == "ellipse":
      r = max(p["rx"], p["ry"])
      cx, cy = p["cx"], p["cy"]
      xs0.append(cx - r); xs1.append(cx + r); ys0.append(cy - r)
      ys1.append(cy + r)
    elif p["kind"] == "rect":
      r = math.hypot(p["hw"], p["hh"])
      cx, cy = p["cx"], p["cy"]
      xs0.append(cx - r); xs1.append(cx + r); ys0.append(cy - r)
      ys1.append(cy + r)
    else:
      r = p["r"]
      xs0.append(min(p["x0"], p["x1"]) - r); xs1.append(max(p["x0"], p["x1"])
                                                        + r)
      ys0.append(min(p["y0"], p["y1"]) - r); ys1.append(max(p["y0"], p["y1"])
                                                        + r)
  return min(xs0), min(ys0), max(xs1), max(ys1)


def raster_mask(primitives: Sequence[Primitive], height: int, width: int
                ) -> np.ndarray:
  """bool ``[H, W]``: pixel centres ``(x=j, y=i)`` inside the union."""
  mask = np.zeros((height, width), bool)
  x0, y0, x1, y1 = _bounds(primitives)
  j0, j1 = max(0, math.floor(x0)), min(width - 1, math.ceil(x1))
  i0, i1 = max(0, math.floor(y0)), min(height - 1, math.ceil(y1))
  if j0 > j1 or i0 > i1:
    return mask
  jj = np.arange(j0, j1 + 1, dtype=np.float64)[None, :]
  ii = np.arange(i0, i1 + 1, dtype=np.float64)[:, None]
  mask[i0:i1 + 1, j0:j1 + 1] = inside(primitives, jj, ii)
  return mask


def face_box_grid(face_box, height: int, width: int):
  """Pixel index ranges ``(i0, i1, j0, j1)`` (inclusive) of the image pixels
  whose centres lie in the face box; raises when there is none."""
  x0, y0, x1, y1 = [float(v) for v in face_box]
  j0, j1 = max(0, math.ceil(x0)), min(width - 1, math.floor(x1))
  i0, i1 = max(0, math.ceil(y0)), min(height - 1, math.floor(y1))
  if j0 > j1 or i0 > i1:
    raise OcclusionError(f"face box {list(face_box)} holds no pixel centre "
                         f"of the {width}x{height} image")
  return i0, i1, j0, j1


def covered_fraction(primitives, face_box, height: int, width: int) -> float:
  """Masked fraction of the image pixels whose centres lie in the face box."""
  i0, i1, j0, j1 = face_box_grid(face_box, height, width)
  jj = np.arange(j0, j1 + 1, dtype=np.float64)[None, :]
  ii = np.arange(i0, i1 + 1, dtype=np.float64)[:, None]
  return float(inside(primitives, jj, ii).mean())


def occluded_points(primitives, points, height: int, width: int
                    ) -> np.ndarray:
  """bool ``[N]``: point inside the occluder and inside the image area."""
  p = np.asarray(points, np.float64)
  in_image = ((p[:, 0] >= -0.5) & (p[:, 0] < width - 0.5)
              & (p[:, 1] >= -0.5) & (p[:, 1] < height - 0.5))
  return inside(primitives, p[:, 0], p[:, 1]) & in_image


def _unit_shape(kind: str, rng: np.random.Generator) -> List[Primitive]:
  """The occluder's primitives around (0, 0), in units of the face size."""
  aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
  if kind in ("texture", "noise"):
    return [{"kind": "rect", "cx": 0.0, "cy": 0.0,
             "hw": 0.27 * math.sqrt(aspect), "hh": 0.27 / math.sqrt(aspect),
             "angle": float(rng.uniform(-0.35, 0.35))}]
  if kind in ("skin_ellipse", "dark_ellipse"):
    return [{"kind": "ellipse", "cx": 0.0, "cy": 0.0,
             "rx": 0.31 * math.sqrt(aspect), "ry": 0.31 / math.sqrt(aspect),
             "angle": float(rng.uniform(-0.5, 0.5))}]
  if kind == "hand":
    phi = float(rng.uniform(0, 2 * math.pi))        # finger direction
    e1 = np.array([math.cos(phi), math.sin(phi)])   # along the fingers
    e2 = np.array([-math.sin(phi), math.cos(phi)])  # across the palm
    prims = [{"kind": "ellipse", "cx": 0.0, "cy": 0.0, "rx": 0.2, "ry": 0.16,
              "angle": phi}]
    spread = rng.uniform(0.9, 1.15)
    fan = rng.uniform(0.0, 0.12)
    lengths = np.array([0.16, 0.21, 0.2, 0.15]) * rng.uniform(0.85, 1.15, 4)
    for k, (off, length) in enumerate(zip((-1.5, -0.5, 0.5, 1.5), lengths)):
      base = 0.1 * e1 + 0.07 * off * spread * e2
      a = fan * (k - 1.5)
      d = math.cos(a) * e1 + math.sin(a) * e2
      tip = base + length * d
      prims.append({"kind": "capsule", "x0": float(base[0]),
                    "y0": float(base[1]), "x1": float(tip[0]),
                    "y1": float(tip[1]), "r": 0.034})
    side = 1.0 if rng.uniform() < 0.5 else -1.0
    base = -0.02 * e1 + side * 0.13 * e2
    a = side * rng.uniform(0.8, 1.2)
    d = math.cos(a) * e1 + math.sin(a) * e2
    tip = base + 0.16 * d
    prims.append({"kind": "capsule", "x0": float(base[0]),
                  "y0": float(base[1]), "x1": float(tip[0]),
                  "y1": float(tip[1]), "r": 0.042})
    return prims
  raise ValueError(f"unknown occluder type {kind!r}; valid: {OCCLUDER_TYPES}")


def _place(unit: Sequence[Primitive], cx: float, cy: float, scale: float
           ) -> List[Primitive]:
  """Unit primitives scaled by ``scale`` and moved to ``(cx, cy)``."""
  out = []
  for p in unit:
    q = dict(p)
    if p["kind"] in ("ellipse", "rect"):
      q["cx"], q["cy"] = cx + scale * p["cx"], cy + scale * p["cy"]
      for k in ("rx", "ry", "hw", "hh"):
        if k in p:
          q[k] = scale * p[k]
    else:
      q["x0"], q["y0"] = cx + scale * p["x0"], cy + scale * p["y0"]
      q["x1"], q["y1"] = cx + scale * p["x1"], cy + scale * p["y1"]
      q["r"] = scale * p["r"]
    out.append({k: (v if isinstance(v, str) else float(v))
                for k, v in q.items()})
  return out


def _fit_scale(unit, cx, cy, face_size, face_box, height, width, target):
  """Bisects the scale so the covered fraction is close to ``target``."""
  def cov(s):
    return covered_fraction(_place(unit, cx, cy, s * face_size), face_box,
                            height, width)
  lo, hi = 0.02, 8.0
  if cov(hi) < target:
    return None
  for _ in range(40):
    mid = math.sqrt(lo * hi)
    c = cov(mid)
    if abs(c - target) < 0.004:
      return mid
    if c < target:
      lo = mid
    else:
      hi = mid
  return math.sqrt(lo * hi)


# ------------------------------------------------------------------ painting


def _shading(rng, h, w, lo, hi):
  """[h, w] linear brightness ramp in a random direction, ``lo..hi``."""
  a = rng.uniform(0, 2 * math.pi)
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  t = math.cos(a) * xx + math.sin(a) * yy
  t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
  return lo + (hi - lo) * t


def _fill(kind, rng, h, w, donor_patch):
  """float [h, w, 3] fill colours for the occluder's bounding region."""
  if kind == "texture":
    return donor_patch.astype(np.float64)
  if kind == "noise":
    block = int(rng.choice([1, 2, 4]))
    small = rng.integers(0, 256, size=(-(-h // block), -(-w // block), 3))
    big = np.repeat(np.repeat(small, block, axis=0), block, axis=1)
    return big[:h, :w].astype(np.float64)
  if kind in ("skin_ellipse", "hand"):
    base = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] + rng.uniform(-12, 12,
                                                                     3)
    shade = _shading(rng, h, w, 0.8, 1.05)
    noise = rng.normal(0, 4, (h, w, 1))
    return base[None, None] * shade[..., None] + noise
  if kind == "dark_ellipse":
    base = rng.uniform(5, 45) + rng.uniform(-5, 5, 3)
    shade = _shading(rng, h, w, 0.7, 1.3)
    noise = rng.normal(0, 3, (h, w, 1))
    return base[None, None] * shade[..., None] + noise
  raise ValueError(f"unknown occluder type {kind!r}")


def _rect_texture(donor: np.ndarray, donor_box, rect: Primitive,
                  rng: np.random.Generator, region_shape, region_origin):
  """Texture values over the occluder's bounding region for a rotated rect:
  a patch of the rect's size cut from ``donor`` (outside ``donor_box`` when
  there is room), sampled in the rect's own frame (nearest pixel)."""
  pw = max(2, int(round(2 * rect["hw"])))
  ph = max(2, int(round(2 * rect["hh"])))
  dh, dw = donor.shape[:2]
  cw, ch = min(pw, dw), min(ph, dh)
  bx0, by0, bx1, by1 = [float(v) for v in donor_box]
  choice = None
  for _ in range(30):
    x = int(rng.integers(0, dw - cw + 1))
    y = int(rng.integers(0, dh - ch + 1))
    overlap = not (x + cw - 0.5 < bx0 or x - 0.5 > bx1
                   or y + ch - 0.5 < by0 or y - 0.5 > by1)
    if not overlap:
      choice = (x, y)
      break
  if choice is None:
    choice = (int(rng.integers(0, dw - cw + 1)),
              int(rng.integers(0, dh - ch + 1)))
  x, y = choice
  patch = donor[y:y + ch, x:x + cw]
  if (cw, ch) != (pw, ph):
    patch = np.asarray(Image.fromarray(patch).resize((pw, ph),
                                                     Image.BILINEAR))
  h, w = region_shape
  i0, j0 = region_origin
  yy, xx = np.mgrid[i0:i0 + h, j0:j0 + w].astype(np.float64)
  c, s = math.cos(rect["angle"]), math.sin(rect["angle"])
  dx, dy = xx - rect["cx"], yy - rect["cy"]
  u, v = c * dx + s * dy, -s * dx + c * dy
  cols = np.clip(np.floor((u + rect["hw"]) * pw / (2 * rect["hw"])),
                 0, pw - 1).astype(int)
  rows = np.clip(np.floor((v + rect["hh"]) * ph / (2 * rect["hh"])),
                 0, ph - 1).astype(int)
  return patch[rows, cols].astype(np.float64), (x, y, cw, ch)


DonorFn = Callable[[np.random.Generator], Tuple[np.ndarray, np.ndarray, str]]


def occlude_face(image: np.ndarray, points: np.ndarray,
                 rng: np.random.Generator, donor: Optional[DonorFn] = None,
                 kind: Optional[str] = None, region: Optional[str] = None,
                 name: str = "image"):
  """Paints one occluder over a face.

  Args:
    image: uint8 ``[H, W, 3]``.
    points: ``[68, 2]`` 0-based landmarks (iBUG layout).
    rng: the face's generator (all random choices come from it, in order).
    donor: ``donor(rng) -> (image, face_box, name)`` gives a texture source;
      without it the ``texture`` type is not drawn.
    kind, region: force the type / region (default: drawn by ``rng``).
    name: used in error messages.

  Returns:
    ``(occluded image uint8 [H, W, 3], mask bool [H, W], info dict)`` with
    info keys ``type``, ``region``, ``covered_fraction``, ``occluded``
    (bool list [68]), ``shape`` (primitives), ``donor``, ``target_fraction``.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
    raise OcclusionError(f"{name}: expected a uint8 [H, W, 3] image, got "
                         f"{image.dtype} {image.shape}")
  points = np.asarray(points, np.float64)
  if points.shape != (68, 2):
    raise OcclusionError(f"{name}: expected 68 landmarks (iBUG layout), got "
                         f"shape {points.shape}")
  h, w = image.shape[:2]
  face_box = crop.landmark_box(points).astype(np.float64)
  bw, bh = face_box[2] - face_box[0], face_box[3] - face_box[1]
  if not (bw > 0 and bh > 0):
    raise OcclusionError(f"{name}: degenerate landmark box {face_box}")
  face_size = math.sqrt(bw * bh)
  types = OCCLUDER_TYPES if donor is not None else tuple(
      t for t in OCCLUDER_TYPES if t != "texture")
  region_names = tuple(REGIONS)
  if kind is None:
    kind = types[int(rng.integers(len(types)))]
  elif kind not in types:
    raise OcclusionError(f"{name}: occluder type {kind!r} not available "
                         f"(valid: {types})")
  if region is None:
    region = region_names[int(rng.integers(len(region_names)))]
  elif region not in REGIONS:
    raise OcclusionError(f"{name}: unknown region {region!r} (valid: "
                         f"{region_names})")
  for _ in range(20):
    cx, cy = points[list(REGIONS[region])].mean(axis=0) + rng.normal(
        0, 0.03 * face_size, 2)
    unit = _unit_shape(kind, rng)
    target = float(rng.uniform(*_TARGET_RANGE))
    s = _fit_scale(unit, cx, cy, face_size, face_box, h, w, target)
    if s is None:
      continue
    prims = _place(unit, cx, cy, s * face_size)
    frac = covered_fraction(prims, face_box, h, w)
    if COVERAGE_RANGE[0] <= frac <= COVERAGE_RANGE[1]:
      break
  else:
    raise OcclusionError(f"{name}: could not place a {kind} occluder over "
                         f"the {region} covering {COVERAGE_RANGE} of the face "
                         "box")

  mask = raster_mask(prims, h, w)
  out = image.copy()
  donor_name = None
  rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
  if rows.size:
    i0, i1, j0, j1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if kind == "texture":
      dimg, dbox, donor_name = donor(rng)
      fill, cut = _rect_texture(np.asarray(dimg), dbox, prims[0], rng,
                                (i1 - i0, j1 - j0), (i0, j0))
      donor_name = {"image": donor_name, "patch_xywh": list(cut)}
    else:
      fill = _fill(kind, rng, i1 - i0, j1 - j0, None)
    fill = np.clip(np.round(fill), 0, 255).astype(np.uint8)
    sub = mask[i0:i1, j0:j1]
    out[i0:i1, j0:j1][sub] = fill[sub]
  occ = occluded_points(prims, points, h, w)
  info = {"type": kind, "region": region, "covered_fraction": frac,
          "target_fraction": target, "occluded": [bool(v) for v in occ],
          "shape": prims, "donor": donor_name}
  return out, mask, info


# ------------------------------------------------------------------ data set


def source_photo(rel_path: str) -> str:
  """300-W face files are ``<photo>_<k>``: faces of one photo share it."""
  stem = pathlib.PurePosixPath(rel_path)
  base = stem.stem
  head, sep, tail = base.rpartition("_")
  photo = head if sep and tail.isdigit() else base
  return str(stem.parent / photo)


def face_rng(seed: int, rel: str) -> np.random.Generator:
  return np.random.default_rng(
      np.random.SeedSequence([int(seed), zlib.crc32(rel.encode("utf-8"))]))


def build_occluded_copy(src, subsets: Sequence[str], out, seed: int = 0,
                        max_faces: Optional[int] = None,
                        names: Optional[Sequence[str]] = None) -> Dict:
  """Writes the occluded copy (module docstring); returns the summary.

  ``names`` (relative paths without extension, e.g. ``afw/134212_1``)
  keeps only those faces of ``subsets``, e.g. the validation faces; texture
  donors then come from those faces too.
  """
  faces = pts_io.find_faces(src, subsets)
  if names is not None:
    keep = set(names)
    missing = keep - {rel for rel, _, _ in faces}
    if missing:
      raise FileNotFoundError(
          f"{len(missing)} requested faces are not in {src} "
          f"{list(subsets)}, e.g. {sorted(missing)[0]}")
    faces = [f for f in faces if f[0] in keep]
  if max_faces is not None:
    faces = faces[:int(max_faces)]
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  photos = [source_photo(rel) for rel, _, _ in faces]

  records = {}
  for idx, (rel, img_path, pts_path) in enumerate(faces):
    rng = face_rng(seed, rel)
    image = np.asarray(crop.load_image_rgb(img_path))
    points = pts_io.read_pts(pts_path)
    candidates = [k for k, ph in enumerate(photos) if ph != photos[idx]]

    def donor(r, candidates=candidates):
      k = candidates[int(r.integers(len(candidates)))]
      d_rel, d_img, d_pts = faces[k]
      d_image = np.asarray(crop.load_image_rgb(d_img))
      return d_image, crop.landmark_box(pts_io.read_pts(d_pts)), d_rel

    occ_img, _, info = occlude_face(image, points, rng,
                                    donor if candidates else None,
                                    name=str(img_path))
    dst = out / (rel + img_path.suffix)
    dst.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(occ_img)
    if img_path.suffix.lower() in (".jpg", ".jpeg"):
      pil.save(dst, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    else:
      pil.save(dst, format="PNG")
    shutil.copyfile(pts_path, out / (rel + ".pts"))
    info["image"] = rel + img_path.suffix
    records[rel] = info

  n = len(records)
  occ_counts = [sum(r["occluded"]) for r in records.values()]
  summary = {
      "faces": n,
      "mean_occluded_points": float(np.mean(occ_counts)),
      "type_counts": {t: sum(r["type"] == t for r in records.values())
                      for t in OCCLUDER_TYPES},
      "region_counts": {g: sum(r["region"] == g for r in records.values())
                        for g in REGIONS},
      "mean_covered_fraction": float(np.mean(
          [r["covered_fraction"] for r in records.values()])),
  }
  # No paths or times in the file: the same seed gives the same bytes.
  doc = {"generator": "sgfan_jax.occlusion_copy", "version": VERSION,
         "seed": int(seed), "subsets": list(subsets),
         "max_faces": max_faces,
         "names": None if names is None else sorted(set(names)), "summary": summary, "faces": records}
  with open(out / "occlusion.json", "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=1, sort_keys=True)
    f.write("\n")
  return summary


def summary_line(summary: Dict) -> str:
  types = ", ".join(f"{t} {c}" for t, c in summary["type_counts"].items())
  return (f"faces {summary['faces']}, mean occluded points per face "
          f"{summary['mean_occluded_points']:.2f} of 68, mean covered "
          f"fraction {summary['mean_covered_fraction']:.3f}; types: {types}")


def load_occlusion(directory) -> Dict:
  """Reads ``occlusion.json`` of an occluded copy."""
  path = pathlib.Path(directory) / "occlusion.json"
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: not an occluded copy (make "
                            "one with python -m sgfan_jax.occlusion_copy)")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined only when run as a command)."""
  flags.DEFINE_string("src", None, "Root of the face folders.")
  flags.DEFINE_list("subsets", None, "Folders under --src, e.g. "
                    "helen/testset,lfpw/testset.")
  flags.DEFINE_string("out", None, "Output directory.")
  flags.DEFINE_integer("seed", 0, "Occluder seed.")
  flags.DEFINE_integer("max_faces", None, "Only the first N faces (quick "
                       "runs).")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not (FLAGS.src and FLAGS.subsets and FLAGS.out):
    raise app.UsageError("--src, --subsets and --out are required")
  summary = build_occluded_copy(FLAGS.src, FLAGS.subsets, FLAGS.out,
                                FLAGS.seed, FLAGS.max_faces)
  print(summary_line(summary))


def cli(argv: Optional[Sequence[str]] = None) -> None:
  """Entry point: ``python -m sgfan_jax.occlusion_copy``."""
  define_flags()
  app.run(main, argv=argv)


if __name__ == "__main__":
  cli()
