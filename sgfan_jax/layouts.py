"""Landmark layouts: the geometry every module needs, kept in one place.

A layout names the points of an annotation scheme (68-point 300-W/iBUG,
29-point COFW, 98-point WFLW) and carries:

* ``flip_pairs``: 0-based index pairs that swap under a horizontal flip
  (the mirror permutation used by flip augmentation);
* ``left_eye`` / ``right_eye``: indices whose mean is the eye centre (pupil),
  used by inter-pupil normalisation;
* ``outer_eye_corners``: the two indices used by inter-ocular normalisation;
* ``regions``: named groups of points (used to simulate occlusion and to
  report per-region errors; ``occluders.REGION_NAMES`` are the ones the
  training occluders are centred on: eyes, nose, mouth, left / right jaw
  where a layout has them).

Nothing elsewhere in the package branches on ``num_points``: code asks the
layout. "Left" and "right" are as seen in the image (viewer's left), matching
the point order of the original annotations.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class LandmarkLayout:
  """Metadata of one landmark annotation scheme (all indices 0-based)."""
  name: str
  num_points: int
  flip_pairs: Tuple[Tuple[int, int], ...]
  left_eye: Tuple[int, ...]
  right_eye: Tuple[int, ...]
  outer_eye_corners: Tuple[int, int]
  regions: Mapping[str, Tuple[int, ...]]

  def __post_init__(self):
    seen = set()
    for a, b in self.flip_pairs:
      for i in (a, b):
        if not 0 <= i < self.num_points:
          raise ValueError(f"{self.name}: flip index {i} out of range")
        if i in seen:
          raise ValueError(f"{self.name}: index {i} in two flip pairs")
        seen.add(i)

  @property
  def flip_permutation(self) -> np.ndarray:
    """[N] int array: ``flipped[i] = original[perm[i]]`` after mirroring."""
    perm = np.arange(self.num_points)
    for a, b in self.flip_pairs:
      perm[a], perm[b] = b, a
    return perm


def _range(a: int, b: int) -> Tuple[int, ...]:
  """Inclusive 0-based range."""
  return tuple(range(a, b + 1))


def _mirror_pairs(left: Sequence[int], right: Sequence[int]):
  return tuple(zip(left, right))


# 68-point iBUG / 300-W scheme (Sagonas et al. 2013), 0-based:
# jaw 0-16, brows 17-21 and 22-26, nose bridge 27-30, nostrils 31-35,
# eyes 36-41 and 42-47, outer lips 48-59, inner lips 60-67.
IBUG_68 = LandmarkLayout(
    name="ibug68",
    num_points=68,
    flip_pairs=(
        _mirror_pairs(_range(0, 7), _range(9, 16)[::-1])      # jaw
        + _mirror_pairs(_range(17, 21), _range(22, 26)[::-1])  # brows
        + ((31, 35), (32, 34))                                 # nostrils
        + ((36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46))  # eyes
        + ((48, 54), (49, 53), (50, 52), (55, 59), (56, 58))   # outer lips
        + ((60, 64), (61, 63), (65, 67))                       # inner lips
    ),
    left_eye=_range(36, 41),
    right_eye=_range(42, 47),
    outer_eye_corners=(36, 45),
    regions={
        "jaw": _range(0, 16),
        "left_jaw": _range(0, 8),
        "right_jaw": _range(8, 16),
        "left_brow": _range(17, 21),
        "right_brow": _range(22, 26),
        "nose": _range(27, 35),
        "left_eye": _range(36, 41),
        "right_eye": _range(42, 47),
        "eyes": _range(36, 47),
        "left_eye_brow": _range(17, 21) + _range(36, 41),
        "right_eye_brow": _range(22, 26) + _range(42, 47),
        "mouth": _range(48, 67),
    },
)

# 29-point COFW scheme (Burgos-Artizzu et al. 2013), 0-based. Order:
# 0-3 brow corners (0/1 outer/inner pairs across faces), 4-7 brow top/bottom,
# 8-11 eye corners, 12-15 eyelids, 16-17 pupils, 18-21 nose, 22-27 mouth,
# 28 chin. Pairs follow the widely used COFW mirror table.
COFW_29 = LandmarkLayout(
    name="cofw29",
    num_points=29,
    flip_pairs=((0, 1), (4, 6), (2, 3), (5, 7), (8, 9), (10, 11), (12, 14),
                (16, 17), (13, 15), (18, 19), (22, 23)),
    left_eye=(16,),
    right_eye=(17,),
    outer_eye_corners=(8, 9),
    regions={
        "brows": _range(0, 7),
        "eyes": _range(8, 17),
        "nose": _range(18, 21),
        "mouth": _range(22, 27),
        "chin": (28,),
    },
)

# 98-point WFLW scheme (Wu et al. 2018), 0-based: contour 0-32, brows 33-50,
# nose 51-59, eyes 60-75, mouth 76-95, pupils 96-97.
WFLW_98 = LandmarkLayout(
    name="wflw98",
    num_points=98,
    flip_pairs=(
        _mirror_pairs(_range(0, 15), _range(17, 32)[::-1])
        + ((33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50),
           (39, 49), (40, 48), (41, 47))
        + ((55, 59), (56, 58))
        + ((60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75),
           (66, 74), (67, 73))
        + ((76, 82), (77, 81), (78, 80), (87, 83), (86, 84), (88, 92),
           (89, 91), (95, 93))
        + ((96, 97),)
    ),
    left_eye=(96,),
    right_eye=(97,),
    outer_eye_corners=(60, 72),
    regions={
        "contour": _range(0, 32),
        "left_jaw": _range(0, 16),
        "right_jaw": _range(16, 32),
        "brows": _range(33, 50),
        "nose": _range(51, 59),
        "eyes": _range(60, 75) + (96, 97),
        "mouth": _range(76, 95),
    },
)

LAYOUTS = {l.name: l for l in (IBUG_68, COFW_29, WFLW_98)}
_BY_SIZE = {l.num_points: l for l in (IBUG_68, COFW_29, WFLW_98)}


def get_layout(name_or_size) -> LandmarkLayout:
  """Looks a layout up by name ('ibug68', 'cofw29', 'wflw98') or point count."""
  if isinstance(name_or_size, (int, np.integer)):
    if int(name_or_size) not in _BY_SIZE:
      raise ValueError(f"No landmark layout with {name_or_size} points; known: "
                       f"{sorted(_BY_SIZE)}")
    return _BY_SIZE[int(name_or_size)]
  if name_or_size not in LAYOUTS:
    raise ValueError(f"Unknown landmark layout {name_or_size!r}; known: "
                     f"{sorted(LAYOUTS)}")
  return LAYOUTS[name_or_size]
