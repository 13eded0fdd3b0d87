r"""Builds the sgfan-jax TFDS datasets (no TensorFlow needed).

Usage:

  python -m tfds_builders.build face300w --manual_dir /data/300w \
      --data_dir ~/tensorflow_datasets
  python -m tfds_builders.build cofw --manual_dir /data/cofw \
      --data_dir ~/tensorflow_datasets

From Python (e.g. the input pipeline)::

  builder = build("face300w", manual_dir, data_dir)   # builds if needed
  builder = load_builder("face300w", data_dir)        # already built
  source = builder.as_data_source(split="test_common")
  layout = split_layout(builder, "test_common")       # 'ibug68'
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import Optional, Sequence

import tensorflow_datasets as tfds

from sgfan_jax import crop

BUILDERS = {
    "face300w": "tfds_builders.face300w.face300w_dataset_builder",
    "cofw": "tfds_builders.cofw.cofw_dataset_builder",
    "ytf68": "tfds_builders.ytf68.ytf68_dataset_builder",
}


def builder_class(name: str):
  """Imports (and so registers with TFDS) the builder ``name``."""
  if name not in BUILDERS:
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(BUILDERS)}")
  return importlib.import_module(BUILDERS[name]).Builder


def build(name: str, manual_dir: str, data_dir: Optional[str] = None,
          overwrite: bool = False) -> tfds.core.DatasetBuilder:
  """Builds dataset ``name`` from ``manual_dir`` into ``data_dir``.

  Args:
    name: 'face300w' or 'cofw'.
    manual_dir: folder with the manually downloaded source files.
    data_dir: TFDS data dir (None = TFDS default).
    overwrite: rebuild even when already built.

  Returns:
    The prepared builder (read it with ``builder.as_data_source(split)``).
  """
  cls = builder_class(name)
  manual_dir = os.path.abspath(os.path.expanduser(os.fspath(manual_dir)))
  if not os.path.isdir(manual_dir):
    raise crop.DataError(f"{name}: manual dir not found: {manual_dir}")
  if not os.listdir(manual_dir):
    raise crop.DataError(
        f"{name}: manual dir {manual_dir} is empty; expected layout:\n"
        f"{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
  if data_dir is not None:
    data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
  builder = cls(data_dir=data_dir, file_format="array_record")
  mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite else
          tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          manual_dir=manual_dir, download_mode=mode))
  return builder


def load_builder(name: str,
                 data_dir: Optional[str] = None) -> tfds.core.DatasetBuilder:
  """Returns the builder of an already built dataset ``name``.

  Raises:
    FileNotFoundError: the dataset has not been built in ``data_dir``.
  """
  cls = builder_class(name)
  if data_dir is not None:
    data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
  builder = cls(data_dir=data_dir)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"dataset {name} is not built in {builder.data_dir}; build it with "
        f"`python -m tfds_builders.build {name} --manual_dir DIR "
        f"--data_dir {data_dir or '~/tensorflow_datasets'}`")
  return builder


def split_layout(builder: tfds.core.DatasetBuilder, split: str) -> str:
  """Layout name ('ibug68', 'cofw29') of one split of a built dataset."""
  layout = builder.info.metadata["layout"]
  if isinstance(layout, dict):
    if split not in layout:
      raise ValueError(f"{builder.name}: no layout for split {split!r}; "
                       f"splits: {sorted(layout)}")
    return layout[split]
  return layout


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m tfds_builders.build",
      description="Build a sgfan-jax TFDS dataset (array_record, no TF).")
  parser.add_argument("name", choices=sorted(BUILDERS))
  parser.add_argument("--manual_dir", required=True,
                      help="folder with the manually downloaded data")
  parser.add_argument("--data_dir", default=None,
                      help="TFDS data dir (default ~/tensorflow_datasets)")
  parser.add_argument("--overwrite", action="store_true",
                      help="rebuild even if already built")
  args = parser.parse_args(argv)
  start = time.time()
  try:
    builder = build(args.name, args.manual_dir, args.data_dir, args.overwrite)
  except (crop.DataError, ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"{builder.name} {builder.info.version} in {builder.data_dir} "
        f"({time.time() - start:.1f} s)")
  for split, info in sorted(builder.info.splits.items()):
    print(f"  {split}: {info.num_examples} examples")
  return 0


if __name__ == "__main__":
  sys.exit(main())
