"""Tests of sgfan_jax.detectors (dlib HOG detector, whole-image detector)."""

import builtins

import numpy as np
import pytest
from PIL import Image

from sgfan_jax import box_map
from sgfan_jax import crop
from sgfan_jax import detectors
from sgfan_jax import pts_io

FACE = "helen/testset/296814969_3"


def _iou(a, b):
  """Naive IoU of two [4] boxes."""
  ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = ix * iy
  ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / ua


def _real_face(shared_data):
  root = shared_data / "300w"
  image = np.asarray(crop.load_image_rgb(root / f"{FACE}.jpg"))
  points = pts_io.read_pts(root / f"{FACE}.pts")
  return image, points


def test_dlib_rect_box_conversion_round_trip():
  box = detectors.dlib_rect_to_box(10, 20, 109, 139)
  # pixels 10..109 cover [9.5, 109.5]: width 100 px.
  np.testing.assert_array_equal(box, [9.5, 19.5, 109.5, 139.5])
  assert detectors.box_to_dlib_rect(box) == (10, 20, 109, 139)


def test_dlib_box_overlaps_landmark_box(shared_data):
  image, points = _real_face(shared_data)
  det = detectors.DlibHOGDetector()
  boxes, scores = det.detect(image)
  assert boxes.dtype == np.float32 and scores.dtype == np.float32
  assert boxes.shape[1] == 4 and boxes.shape[0] == scores.shape[0] >= 1
  assert np.all(np.diff(scores) <= 0), "not sorted by score"
  lb = crop.landmark_box(points)
  best = max(_iou(b, lb) for b in boxes)
  print(f"best IoU dlib box vs landmark box: {best:.3f}")
  assert best > 0.4


def test_downscaled_detection_matches_full_resolution(shared_data):
  image, _ = _real_face(shared_data)
  h, w = image.shape[:2]
  big = np.asarray(Image.fromarray(image).resize((2 * w, 2 * h),
                                                 Image.BICUBIC))
  full = detectors.DlibHOGDetector(upsample=0, max_side=None)
  small = detectors.DlibHOGDetector(upsample=0, max_side=max(h, w))
  bf, _ = full.detect(big)
  bs, _ = small.detect(big)
  assert len(bf) >= 1 and len(bs) >= 1
  # The downscaled path's box is in full-resolution coordinates: about twice
  # the size of the box found on the original image, and close to the box
  # found directly at full resolution (up to the detector's own scale
  # quantisation: its image pyramid steps by 5/6).
  b0, _ = full.detect(image)
  np.testing.assert_allclose(bs[0], (b0[0] + 0.5) * 2 - 0.5, atol=2.0)
  assert _iou(bf[0], bs[0]) > 0.7, (bf[0], bs[0])
  assert np.all(np.abs(bf[0] - bs[0]) < 0.15 * (bf[0][2] - bf[0][0]))


def test_no_face_gives_empty_arrays():
  det = detectors.DlibHOGDetector(adjust_threshold=0.0)
  boxes, scores = det.detect(np.zeros((120, 160, 3), np.uint8))
  assert boxes.shape == (0, 4) and scores.shape == (0,)
  assert boxes.dtype == np.float32


def test_whole_image_detector():
  det = detectors.get_detector("none")
  boxes, scores = det.detect(np.zeros((30, 50, 3), np.uint8))
  np.testing.assert_array_equal(boxes, [[-0.5, -0.5, 49.5, 29.5]])
  np.testing.assert_array_equal(scores, [1.0])
  assert boxes.dtype == np.float32


def test_get_detector_names():
  assert isinstance(detectors.get_detector(), detectors.BlazeFaceDetector)
  assert isinstance(detectors.get_detector("dlib_hog", upsample=0),
                    detectors.DlibHOGDetector)
  with pytest.raises(ValueError, match="'dlib_hog', 'blazeface', "
                     "'blazeface_short', 'none'"):
    detectors.get_detector("mtcnn")


def test_bad_image_errors():
  det = detectors.WholeImageDetector()
  with pytest.raises(ValueError, match="uint8"):
    det.detect(np.zeros((10, 10, 3), np.float32))
  with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
    det.detect(np.zeros((10, 10), np.uint8))


def test_missing_dlib_message(monkeypatch):
  real_import = builtins.__import__

  def fake_import(name, *args, **kwargs):
    if name == "dlib":
      raise ImportError("No module named 'dlib'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", fake_import)
  with pytest.raises(ImportError, match="pip install dlib-bin"):
    detectors.DlibHOGDetector()


def test_bundled_box_map_loads():
  bm = box_map.load_default("dlib_hog")
  assert 0.5 < bm.sw < 1.5 and 0.5 < bm.sh < 1.5
  assert bm.meta["faces_used"] > 0
