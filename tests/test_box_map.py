"""Tests of sgfan_jax.box_map (detector box <-> landmark box)."""

import json
import pathlib
import sys

import numpy as np
import pytest

from sgfan_jax import box_map
from sgfan_jax import crop
from sgfan_jax import detectors
from sgfan_jax import pts_io


def _random_boxes(rng, n):
  xy = rng.uniform(0, 500, size=(n, 2))
  wh = rng.uniform(20, 300, size=(n, 2))
  return np.concatenate([xy, xy + wh], axis=1)


def test_apply_matches_hand_computed_values():
  bm = box_map.BoxMap(dx=0.1, dy=-0.2, sw=0.5, sh=2.0)
  # box centre (50, 100), size 40 x 20 -> centre (54, 96), size 20 x 40.
  out = bm.apply([[30.0, 90.0, 70.0, 110.0]])
  np.testing.assert_allclose(out, [[44.0, 76.0, 64.0, 116.0]])


def test_fit_recovers_known_map_exactly():
  rng = np.random.default_rng(0)
  det = _random_boxes(rng, 50)
  truth = box_map.BoxMap(dx=0.013, dy=0.11, sw=0.97, sh=0.93)
  lm = truth.apply(det)
  fit = box_map.BoxMap.fit(det, lm)
  np.testing.assert_allclose(fit.params, truth.params, atol=1e-12)


def test_fit_is_robust_to_outliers():
  rng = np.random.default_rng(1)
  det = _random_boxes(rng, 101)
  truth = box_map.BoxMap(dx=-0.05, dy=0.1, sw=1.1, sh=0.9)
  lm = truth.apply(det)
  lm[:20] = _random_boxes(rng, 20)  # 20 % garbage pairs
  fit = box_map.BoxMap.fit(det, lm)
  np.testing.assert_allclose(fit.params, truth.params, atol=0.05)


def test_inverse_of_apply_is_identity():
  rng = np.random.default_rng(2)
  b = _random_boxes(rng, 30)
  bm = box_map.BoxMap(dx=0.02, dy=0.12, sw=0.95, sh=0.9)
  np.testing.assert_allclose(bm.inverse(bm.apply(b)), b, atol=1e-9)
  np.testing.assert_allclose(bm.apply(bm.inverse(b)), b, atol=1e-9)
  assert bm.apply(b.reshape(3, 10, 4)).shape == (3, 10, 4)


def test_json_round_trip_and_errors(tmp_path):
  bm = box_map.BoxMap(dx=0.1, dy=0.2, sw=0.9, sh=1.1, meta={"faces_used": 7})
  path = tmp_path / "m.json"
  bm.to_json(path)
  back = box_map.BoxMap.from_json(path)
  assert back == bm and back.meta == {"faces_used": 7}
  (tmp_path / "bad.json").write_text(json.dumps({"dx": 0, "dy": 0, "sw": 1}))
  with pytest.raises(ValueError, match=r"bad\.json.*sh"):
    box_map.BoxMap.from_json(tmp_path / "bad.json")
  (tmp_path / "neg.json").write_text(
      json.dumps({"dx": 0, "dy": 0, "sw": -1, "sh": 1}))
  with pytest.raises(ValueError, match=r"neg\.json.*> 0"):
    box_map.BoxMap.from_json(tmp_path / "neg.json")
  with pytest.raises(FileNotFoundError, match="nope.json"):
    box_map.BoxMap.from_json(tmp_path / "nope.json")


def test_iou_hand_computed():
  a = [[0, 0, 10, 10]]
  b = [[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]]
  np.testing.assert_allclose(box_map.iou(a, b), [[50 / 150, 0.0, 1.0]])


def test_match_detections_greedy_by_iou():
  faces = np.array([[0, 0, 10, 10], [100, 100, 120, 120]], float)
  dets = np.array([[101, 101, 121, 121],    # face 1
                   [50, 50, 60, 60],        # nothing
                   [1, 0, 11, 10]], float)  # face 0
  np.testing.assert_array_equal(box_map.match_detections(dets, faces), [2, 0])
  np.testing.assert_array_equal(
      box_map.match_detections(dets[:2], faces[:1]), [-1])
  np.testing.assert_array_equal(
      box_map.match_detections(np.zeros((0, 4)), faces), [-1, -1])


def test_mapping_improves_iou_on_held_out_test_faces(shared_data):
  """The map fitted on 300-W train faces helps on the common test faces."""
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]
                         / "scripts"))
  import fit_box_map  # pylint: disable=g-import-not-at-top
  faces = [(image, pts) for _, image, pts in pts_io.find_faces(
      shared_data / "300w", fit_box_map.TEST_SUBSETS)]
  assert len(faces) == 554
  faces = faces[::4]  # 139 faces: keeps the test to a few seconds
  bm = box_map.load_default("dlib_hog")
  det = detectors.DlibHOGDetector()
  raw, mapped = [], []
  for img_path, pts_path in faces:
    image = np.asarray(crop.load_image_rgb(img_path))
    lb = crop.landmark_box(pts_io.read_pts(pts_path))
    boxes, _ = det.detect(image)
    j = box_map.match_detections(boxes, lb[None], 0.3)[0]
    if j < 0:
      continue
    raw.append(box_map.iou(boxes[j][None], lb[None])[0, 0])
    mapped.append(box_map.iou(bm.apply(boxes[j])[None], lb[None])[0, 0])
  raw_med, mapped_med = float(np.median(raw)), float(np.median(mapped))
  print(f"test faces matched {len(raw)}/{len(faces)}: median IoU raw "
        f"{raw_med:.3f}, mapped {mapped_med:.3f}")
  assert len(raw) > 0.9 * len(faces)
  assert mapped_med > raw_med + 0.02
