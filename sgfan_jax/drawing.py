"""Landmark overlays (PIL): the one place points are drawn on images.

Used by the predict command and the demo (``NAME.png``: the photo at full
resolution). The evaluation figures (``vis/``: ground truth vs predictions,
with a legend and a zoom) are matplotlib figures in
``reporting/plots.py``. Marker styles: a filled dot (``"dot"``), a hollow ring
(``"ring"``), a cross (``"x"``) and a plus (``"+"``), all scaled with the
image so they stay visible on small crops and large photos.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from PIL import Image
from PIL import ImageDraw

# Predict overlay colours (RGB): visible points, occluded points, face box.
VISIBLE = (40, 220, 60)
OCCLUDED = (255, 40, 40)
BOX = (255, 210, 0)
MARKERS = ("dot", "ring", "x", "+")


def marker_radius(size: Tuple[int, int]) -> float:
  """Marker radius for an image of ``(width, height)`` pixels."""
  return max(1.5, max(size) / 250.0)


def draw_markers(draw: ImageDraw.ImageDraw, points: np.ndarray, colour,
                 marker: str, radius: float, width: int = 1) -> None:
  """Draws ``[K, 2]`` points (pixel-centre coordinates) with one marker."""
  if marker not in MARKERS:
    raise ValueError(f"marker must be one of {MARKERS}, got {marker!r}")
  for x, y in np.asarray(points, np.float64).reshape(-1, 2):
    if not (np.isfinite(x) and np.isfinite(y)):
      continue
    # PIL draws in edge coordinates: pixel centre x -> x + 0.5.
    x, y, r = x + 0.5, y + 0.5, radius
    if marker == "dot":
      draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    elif marker == "ring":
      draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=width)
    elif marker == "x":
      draw.line([x - r, y - r, x + r, y + r], fill=colour, width=width)
      draw.line([x - r, y + r, x + r, y - r], fill=colour, width=width)
    else:
      draw.line([x - r, y, x + r, y], fill=colour, width=width)
      draw.line([x, y - r, x, y + r], fill=colour, width=width)


def draw_box(draw: ImageDraw.ImageDraw, box: Sequence[float], colour,
             width: int = 1) -> None:
  """Draws a ``[x0, y0, x1, y1]`` box (pixel-centre coordinates)."""
  x0, y0, x1, y1 = [float(v) + 0.5 for v in box]
  draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)


def face_overlay(image: Image.Image, faces, box: bool = True) -> Image.Image:
  """The photo with every face's points: visible = green dots, occluded
  (confidence below threshold) = red crosses, box in yellow.

  Args:
    image: RGB PIL image.
    faces: ``Face`` objects (``points``, ``occluded``, ``box``).
    box: draw the face boxes.
  """
  out = image.convert("RGB").copy()
  d = ImageDraw.Draw(out)
  r = marker_radius(out.size)
  width = max(1, int(round(r / 2)))
  for face in faces:
    if box:
      draw_box(d, face.box, BOX, width)
    occ = np.asarray(face.occluded, bool)
    draw_markers(d, face.points[~occ], VISIBLE, "dot", r)
    draw_markers(d, face.points[occ], OCCLUDED, "x", r * 1.6, width + 1)
  return out
