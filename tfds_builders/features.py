"""TFDS example features of docs/DESIGN.md, shared by the face300w and cofw
builders. Crops come from :mod:`sgfan_jax.crop`; images are stored
PNG-encoded by PIL, so no TensorFlow is needed.
"""

from __future__ import annotations

import io
from typing import Dict

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from sgfan_jax import crop
from sgfan_jax.crop import CROP_CONTEXT, CROP_SIZE


def example_features(num_points, crop_size: int = CROP_SIZE):
  """The tfds FeaturesDict of docs/DESIGN.md.

  Args:
    num_points: points per face (``None`` = varies by split).
    crop_size: stored crop side ``S``.
  """
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(crop_size, crop_size, 3),
                                   dtype=np.uint8, encoding_format="png"),
      "landmarks": tfds.features.Tensor(shape=(num_points, 2),
                                        dtype=np.float32),
      "landmarks_original": tfds.features.Tensor(shape=(num_points, 2),
                                                 dtype=np.float32),
      "visible": tfds.features.Tensor(shape=(num_points,), dtype=np.bool_),
      "crop_to_image": tfds.features.Tensor(shape=(2, 3), dtype=np.float32),
      "face_box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
      "file_name": tfds.features.Text(),
      "subset": tfds.features.Text(),
  })


def encode_png(a: np.ndarray) -> bytes:
  """uint8 ``[H, W, 3]`` -> PNG bytes (PIL; no TensorFlow; fast level 1)."""
  buf = io.BytesIO()
  Image.fromarray(a, "RGB").save(buf, format="PNG", compress_level=1)
  return buf.getvalue()


def make_example(im: Image.Image, points: np.ndarray, visible: np.ndarray,
                 face_box: np.ndarray, file_name: str, subset: str,
                 crop_context: float = CROP_CONTEXT,
                 crop_size: int = CROP_SIZE) -> Dict[str, object]:
  """Builds one example dict (features of docs/DESIGN.md).

  Args:
    im: RGB PIL image (original).
    points: float ``[N, 2]`` 0-based image coordinates.
    visible: bool ``[N]``.
    face_box: ``[x0, y0, x1, y1]`` image coordinates (crop centre and size).
    file_name: path relative to the manual dir.
    subset: subset name.
  """
  side, ex, ey = crop.crop_transform(face_box, crop_context)
  pixels = crop.crop_image(im, side, ex, ey, crop_size)
  points = np.asarray(points, np.float32)
  return {
      "image": encode_png(pixels),
      "landmarks": crop.image_to_crop(points, side, ex, ey, crop_size),
      "landmarks_original": points,
      "visible": np.asarray(visible, np.bool_),
      "crop_to_image": crop.crop_to_image_matrix(side, ex, ey, crop_size),
      "face_box": np.asarray(face_box, np.float32),
      "file_name": file_name,
      "subset": subset,
  }


def dataset_info(builder, feature_points, homepage: str, **metadata):
  """The DatasetInfo both builders declare: the features of DESIGN.md, the
  release order kept (split index i is the i-th face of the release;
  training shuffles in the input pipeline) and the crop geometry in the
  metadata, plus the builder's own ``metadata`` entries."""
  return builder.dataset_info_from_configs(
      features=example_features(feature_points, CROP_SIZE),
      supervised_keys=None,
      disable_shuffling=True,
      homepage=homepage,
      metadata=tfds.core.MetadataDict(crop_context=CROP_CONTEXT,
                                      crop_size=CROP_SIZE, **metadata),
  )
