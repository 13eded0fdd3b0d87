"""Builds the K-SVD shape dictionary D_S (Sec. 3.3) and writes it as .npz.

Command (every ``.pts`` under the folder, recursively)::

  python -m sgfan_jax.build_dictionary --shapes_dir ../shared/data/300w/afw \
      --out /tmp/shape_dictionary.npz

K-SVD settings come from ``config.refine`` (``--config`` defaults to
configs/default.py; override e.g. ``--config.refine.dictionary_size=100``).
From Python, :func:`build_and_save` takes an [M, N, 2] array.
"""

import glob
import os
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np

from sgfan_jax import ksvd
from sgfan_jax import pts_io

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "configs", "default.py")

_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "Config file (uses config.refine and "
    "config.data.layout).")
_SHAPES_DIR = flags.DEFINE_string(
    "shapes_dir", None, "Folder searched recursively for .pts files.")
_OUT = flags.DEFINE_string("out", None, "Output .npz path.")


def shapes_from_dir(directory: str, num_points: int = 68) -> np.ndarray:
  """Reads every .pts under ``directory`` (recursive, sorted): [M, N, 2]."""
  files = sorted(glob.glob(os.path.join(directory, "**", "*.pts"),
                           recursive=True))
  if not files:
    raise FileNotFoundError(f"no .pts files under {directory}")
  return np.stack([pts_io.read_pts(f, expected_points=num_points)
                   for f in files])


def build_and_save(shapes: np.ndarray, out: str, refine_cfg,
                   layout_name: str = "") -> ksvd.ShapeDictionary:
  """Builds D_S from shapes [M, N, 2] with ``refine_cfg`` and saves it."""
  dictionary = ksvd.build_dictionary(shapes, refine_cfg,
                                     layout_name=layout_name or None)
  ksvd.save_dictionary(out, dictionary)
  return dictionary


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _SHAPES_DIR.value or not _OUT.value:
    raise app.UsageError("--shapes_dir and --out are required")
  config = _CONFIG.value
  from sgfan_jax import layouts  # pylint: disable=g-import-not-at-top
  layout = layouts.get_layout(config.data.layout)
  shapes = shapes_from_dir(_SHAPES_DIR.value, layout.num_points)
  dictionary = build_and_save(shapes, _OUT.value, config.refine, layout.name)
  info = dictionary.info
  msg = (f"wrote {_OUT.value}: {dictionary.num_atoms} atoms x "
         f"{dictionary.atoms.shape[1]} points from {len(shapes)} shapes "
         f"({info})")
  logging.info(msg)
  print(msg)


if __name__ == "__main__":
  app.run(main)
