"""Builds the K-SVD shape dictionary D_S (Sec. 3.3) and writes it as .npz.

Commands::

  # From the config's TFDS training split, into WORKDIR/shape_dictionary.npz
  # (where training and evaluation look for it):
  python -m sgfan_jax.build_dictionary --config configs/face300w.py \
      --workdir ~/sgfan/300w
  # From every ``.pts`` under a folder (recursively):
  python -m sgfan_jax.build_dictionary --shapes_dir ../shared/data/300w/afw \
      --out /tmp/shape_dictionary.npz

K-SVD settings come from ``config.refine`` (``--config`` defaults to
configs/default.py; override e.g. ``--config.refine.dictionary_size=100``).
From Python, :func:`build_and_save` takes an [M, N, 2] array.
"""

import glob
import os
from typing import Optional, Sequence

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from sgfan_jax import inference
from sgfan_jax import input_pipeline
from sgfan_jax import ksvd
from sgfan_jax import layouts
from sgfan_jax import pts_io
from sgfan_jax import run

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "configs", "default.py")

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined only when run as a command)."""
  config_flags.DEFINE_config_file(
      "config", _DEFAULT_CONFIG, "Config file (uses config.refine and "
      "config.data.layout).")
  flags.DEFINE_string("shapes_dir", None,
                      "Folder searched recursively for .pts files.")
  flags.DEFINE_string("out", None, "Output .npz path.")
  flags.DEFINE_string(
      "workdir", None, "Read the config's TFDS training split and write "
      "WORKDIR/shape_dictionary.npz (replacing an existing one).")


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
  config = FLAGS.config
  layout = layouts.get_layout(config.data.layout)
  if FLAGS.workdir:
    source, _ = input_pipeline.open_split(
        config.data.train_dataset, config.data.train_split,
        config.data.data_dir)
    shapes = run.training_shapes(source)
    out = os.path.join(FLAGS.workdir, inference.DICTIONARY_FILE)
    os.makedirs(FLAGS.workdir, exist_ok=True)
  elif FLAGS.shapes_dir and FLAGS.out:
    shapes = shapes_from_dir(FLAGS.shapes_dir, layout.num_points)
    out = FLAGS.out
  else:
    raise app.UsageError("give --workdir (TFDS training split of --config) "
                         "or --shapes_dir and --out")
  dictionary = build_and_save(shapes, out, config.refine, layout.name)
  info = dictionary.info
  msg = (f"wrote {out}: {dictionary.num_atoms} atoms x "
         f"{dictionary.atoms.shape[1]} points from {len(shapes)} shapes "
         f"({info})")
  print(msg)


def cli(argv: Optional[Sequence[str]] = None) -> None:
  """Entry point: ``python -m sgfan_jax.build_dictionary``."""
  define_flags()
  app.run(main, argv=argv)


if __name__ == "__main__":
  cli()
