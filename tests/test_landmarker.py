"""sgfan_jax.Landmarker on photos: inputs, boxes, coordinates, formats.

The network is the tiny untrained model of tests/photo_fixtures.py, so the
points are not near the faces; what is tested is that the same face gives
the same points however it is handed over (path / PIL / array, any file
format, EXIF rotation), and that the points move exactly as the face does in
the photo (a translation, an integer upscaling).
"""

import json

import numpy as np
import pytest
from PIL import Image

from sgfan_jax import box_map as box_map_lib
from sgfan_jax import crop
from sgfan_jax.landmarker import Face
from sgfan_jax.landmarker import Landmarker
from tests import photo_fixtures as pf


@pytest.fixture(scope="module")
def lm():
  """The tiny model with the config's detector (dlib HOG), batch 4."""
  return Landmarker.from_pretrained(pf.tiny_model_dir())


@pytest.fixture(scope="module")
def face():
  rgb, pts = pf.sample_face()
  # A box exactly representable in float32 even after integer shifts, so a
  # shifted box gives bit-identical crop geometry.
  box = np.round(crop.landmark_box(pts) * 4) / 4
  return rgb, box.astype(np.float32)


def _same_faces(a, b, atol=0.0):
  assert len(a) == len(b)
  for fa, fb in zip(a, b):
    np.testing.assert_allclose(fa.points, fb.points, rtol=0, atol=atol)
    np.testing.assert_allclose(fa.raw_points, fb.raw_points, rtol=0,
                               atol=atol)
    np.testing.assert_allclose(fa.confidence, fb.confidence, rtol=0,
                               atol=max(atol, 1e-6))
    np.testing.assert_array_equal(fa.box, fb.box)


def _detect_box(lm, image, box):
  return lm.detect(image, boxes=[box], box_format="landmarks")


# ------------------------------------------------------------------ inputs


def test_path_pil_array_give_the_same_points(lm):
  path = pf.face_path()
  by_path = lm.detect(str(path))
  assert len(by_path) == 1
  with Image.open(path) as im:
    by_pil = lm.detect(im)
    array = np.asarray(im.convert("RGB"))
  by_array = lm.detect(array)
  by_pathlib = lm.detect(path)
  _same_faces(by_path, by_pil)
  _same_faces(by_path, by_array)
  _same_faces(by_path, by_pathlib)
  f = by_path[0]
  assert isinstance(f, Face)
  assert f.points.shape == (68, 2) and f.raw_points.shape == (68, 2)
  assert f.confidence.shape == (68,) and f.occluded.dtype == bool
  assert f.box_score is not None and f.box_score > 0
  # The detector found the face: its mapped box overlaps the annotation.
  iou = box_map_lib.iou(f.face_box, pf.face_box())[0, 0]
  assert iou > 0.5, iou
  # Different faces give different points (the network is not constant).
  other = lm.detect(pf.face_path(pf.FACES[2]))
  assert np.abs(other[0].raw_points - f.raw_points).max() > 1.0


def test_box_formats(lm, face):
  rgb, _ = face
  detector_box = np.array([100.0, 110.0, 260.0, 270.0], np.float32)
  by_detector = lm.detect(rgb, boxes=[detector_box])
  # The bundled map, applied by hand from its JSON numbers.
  m = json.loads(box_map_lib.DEFAULT_MAPS[lm.detector_name].read_text())
  w = h = 160.0
  cx, cy = 180.0 + m["dx"] * w, 190.0 + m["dy"] * h
  tw, th = m["sw"] * w, m["sh"] * h
  expect = np.array([cx - tw / 2, cy - th / 2, cx + tw / 2, cy + th / 2])
  f = by_detector[0]
  np.testing.assert_allclose(f.face_box, expect, atol=1e-3)
  np.testing.assert_array_equal(f.box, detector_box)
  assert f.box_score is None
  # The same model box given in the landmark convention: the same face.
  mapped = lm.box_map.apply(detector_box).astype(np.float32)
  by_landmarks = lm.detect(rgb, boxes=[mapped], box_format="landmarks")
  np.testing.assert_array_equal(by_landmarks[0].points, f.points)
  np.testing.assert_array_equal(by_landmarks[0].face_box, f.face_box)
  np.testing.assert_array_equal(by_landmarks[0].box, mapped)
  # ... and not the face of the unmapped box.
  unmapped = lm.detect(rgb, boxes=[detector_box], box_format="landmarks")
  assert not np.allclose(unmapped[0].raw_points, f.raw_points, atol=1.0)
  with pytest.raises(ValueError, match="box_format must be one of"):
    lm.detect(rgb, boxes=[detector_box], box_format="xywh")


def test_points_are_in_original_image_coordinates(lm, face):
  """The face pasted into a larger canvas at an integer offset: the crop is
  the same pixels, so the points move by exactly the offset."""
  rgb, box = face
  offset = np.array([137, 61], np.float32)
  canvas = pf.paste((800, 1000), [(rgb, (137, 61))])
  shifted = box + np.tile(offset, 2)
  a = lm.prepare(rgb, [box], "landmarks")
  b = lm.prepare(canvas, [shifted], "landmarks")
  np.testing.assert_array_equal(a.crops, b.crops)
  fa, fb = lm.finish([a, b])
  for key in ("points", "raw_points"):
    np.testing.assert_allclose(getattr(fb[0], key) - offset,
                               getattr(fa[0], key), rtol=0, atol=1e-3)
  np.testing.assert_allclose(fb[0].confidence, fa[0].confidence, atol=1e-6)
  np.testing.assert_array_equal(fb[0].box, shifted)


def test_no_face_gives_an_empty_list(lm):
  blank = np.full((240, 320, 3), 127, np.uint8)
  ramp = np.broadcast_to(np.linspace(0, 255, 320).astype(np.uint8)[None, :,
                                                                   None],
                         (240, 320, 3)).copy()
  for image in (blank, ramp):
    faces = lm.detect(image)
    assert faces == [] and isinstance(faces, list)
  results = lm.detect_batch([blank, str(pf.face_path()), ramp])
  assert [len(r) for r in results] == [0, 1, 0]
  assert lm.detect_batch([blank, ramp]) == [[], []]


def test_batch_sizes_up_to():
  from sgfan_jax import landmarker  # pylint: disable=g-import-not-at-top
  assert landmarker.batch_sizes_up_to(8) == (1, 2, 4, 8)
  assert landmarker.batch_sizes_up_to(6) == (1, 2, 4, 6)
  assert landmarker.batch_sizes_up_to(1) == (1,)
  assert [landmarker.pick_batch_size(n, (1, 2, 4, 6)) for n in range(1, 7)
          ] == [1, 2, 4, 4, 6, 6]
  with pytest.raises(ValueError, match="batch_size must be >= 1"):
    landmarker.batch_sizes_up_to(0)


def test_one_face_runs_at_batch_one_and_traces_stay_bounded(face):
  """A fresh Landmarker: a single face compiles (and pays for) batch 1 only;
  any mix of face counts afterwards adds at most the other sizes."""
  rgb, box = face
  lm = Landmarker.from_pretrained(pf.tiny_model_dir())
  lm.detect(rgb, boxes=[box], box_format="landmarks")
  assert lm._predict._cache_size() == 1   # pylint: disable=protected-access
  seen = []
  real = lm._predict                       # pylint: disable=protected-access
  lm._predict = lambda v, c, m, d: (seen.append(len(c)), real(v, c, m, d))[1]
  rng = np.random.default_rng(1)
  for k in (1, 2, 3, 5, 9, 4):
    boxes = box + rng.uniform(-4, 4, (k, 4)).astype(np.float32)
    assert len(lm.detect(rgb, boxes=boxes, box_format="landmarks")) == k
  # batch 4 max: 1 | 2 | 3->4 | 4+1 | 4+4+1 | 4
  assert seen == [1, 2, 4, 4, 1, 4, 4, 1, 4]
  assert real._cache_size() == 3          # pylint: disable=protected-access


def test_detect_batch_varying_face_counts_bounded_compiles(lm, face):
  rgb, box = face
  rng = np.random.default_rng(0)
  jitter = lambda k: box + rng.uniform(-8, 8, (k, 4)).astype(np.float32)
  boxes = [np.zeros((0, 4), np.float32), jitter(1), jitter(3), None,
           jitter(6), jitter(4)]
  images = [rgb] * len(boxes)
  results = lm.detect_batch(images, boxes, box_format="landmarks")
  assert [len(r) for r in results] == [0, 1, 3, 1, 6, 4]
  # 15 faces in chunks of 4 (the last one padded): few jitted programs.
  assert lm.batch_size == pf.TINY_BATCH
  assert lm._predict._cache_size() <= 3   # pylint: disable=protected-access
  # Batching and padding do not change any face's result.
  for image_boxes, faces in zip(boxes, results):
    if image_boxes is None:
      _same_faces(faces, lm.detect(rgb), atol=1e-3)
      continue
    for b, f in zip(image_boxes, faces):
      _same_faces([f], _detect_box(lm, rgb, b), atol=1e-3)
  with pytest.raises(ValueError, match="2 box lists for 6 images"):
    lm.detect_batch(images, boxes[:2])
  assert lm._predict._cache_size() <= 3   # pylint: disable=protected-access


def test_occluded_is_confidence_below_threshold(lm, face):
  rgb, box = face
  faces = lm.detect_batch([rgb, pf.group_photo()[0]])
  faces = faces[0] + faces[1] + _detect_box(lm, rgb, box)
  assert len(faces) == 5
  assert lm.occluded_threshold == pf.TINY_THRESHOLD
  assert lm.occluded_threshold == lm.config.refine.weight_threshold
  conf = np.stack([f.confidence for f in faces])
  occ = np.stack([f.occluded for f in faces])
  np.testing.assert_array_equal(occ, conf < pf.TINY_THRESHOLD)
  assert occ.any() and (~occ).any()       # both kinds occur
  assert conf.min() >= 0 and conf.max() <= 1
  d = json.loads(json.dumps(faces[0].to_dict()))
  assert d["occluded"] == occ[0].tolist()


@pytest.fixture(scope="module")
def lm_none():
  return Landmarker.from_pretrained(pf.tiny_model_dir(), detector="none")


def test_detector_none_takes_the_whole_image(lm, lm_none):
  rgb, _ = pf.sample_face(pf.FACES[1])          # 384 wide, 291 high
  h, w = rgb.shape[:2]
  assert (w, h) == (384, 291)
  faces = lm_none.detect(rgb)
  assert len(faces) == 1
  f = faces[0]
  np.testing.assert_array_equal(f.box, [-0.5, -0.5, w - 0.5, h - 0.5])
  assert f.box_score == 1.0
  # The model box for which the network window is the centred square of
  # the shorter side: side min(w, h) / face_context.
  side = h / lm.config.data.face_context
  cx, cy = (w - 1) / 2, (h - 1) / 2
  np.testing.assert_allclose(
      f.face_box, [cx - side / 2, cy - side / 2, cx + side / 2,
                   cy + side / 2], atol=1e-4)
  # The same face box handed to the other Landmarker: the same points.
  same = lm.detect(rgb, boxes=[f.face_box], box_format="landmarks")
  np.testing.assert_allclose(same[0].points, f.points, atol=1e-3)
  # Given boxes in the detector convention are read in the default
  # detector's (dlib HOG) convention, as with the dlib Landmarker.
  given = [[60, 40, 250, 240]]
  a, b = lm_none.detect(rgb, boxes=given), lm.detect(rgb, boxes=given)
  np.testing.assert_array_equal(a[0].face_box, b[0].face_box)
  np.testing.assert_allclose(a[0].points, b[0].points, atol=1e-3)


@pytest.mark.parametrize("bad,what", [
    ([50, 60, 50, 120], "x1 > x0"),
    ([50, 60, 40, 120], "x1 > x0"),
    ([50, 60, 90, 60], "y1 > y0"),
    ([50, np.nan, 90, 120], "x1 > x0"),
])
def test_bad_boxes_raise_value_error(lm, face, bad, what):
  rgb, _ = face
  with pytest.raises(ValueError, match=f"face boxes must be.*{what}.*got"):
    lm.detect(rgb, boxes=[bad], box_format="landmarks")
  with pytest.raises(ValueError, match="face boxes must be"):
    lm.detect(rgb, boxes=[[0, 0, 100, 100], bad])


# ----------------------------------------------------------- image formats


def _gray(rgb):
  return np.asarray(Image.fromarray(rgb).convert("L"))


def _gray3(g):
  return np.repeat(g[:, :, None], 3, 2)


def _write(kind, rgb, path):
  """Writes ``rgb`` in one format; returns (path, expected upright RGB,
  exact) where exact says whether the decode must match bit for bit."""
  g = _gray(rgb)
  if kind == "L":
    Image.fromarray(g, "L").save(path := path.with_suffix(".png"))
    return path, _gray3(g), True
  if kind == "RGBA":
    alpha = np.random.default_rng(0).integers(0, 256, g.shape, np.uint8)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(
        path := path.with_suffix(".png"))
    return path, rgb, True                 # alpha dropped, colours kept
  if kind == "LA":
    alpha = np.full(g.shape, 90, np.uint8)
    Image.fromarray(np.dstack([g, alpha]), "LA").save(
        path := path.with_suffix(".png"))
    return path, _gray3(g), True
  if kind == "P":
    pal = Image.fromarray(rgb).quantize(64)
    pal.save(path := path.with_suffix(".png"))
    index = np.asarray(pal)
    table = np.asarray(pal.getpalette(), np.uint8).reshape(-1, 3)
    return path, table[index], True
  if kind == "I;16":
    Image.fromarray(g.astype(np.uint16) * 257).save(
        path := path.with_suffix(".png"))
    with Image.open(path) as im:
      assert im.mode.startswith("I"), im.mode        # really 16-bit
      assert np.asarray(im).max() > 255
    return path, _gray3(g), True           # 65535 -> 255 exactly
  if kind == "CMYK":
    Image.fromarray(rgb).convert("CMYK").save(
        path := path.with_suffix(".jpg"), quality=95)
    with Image.open(path) as im:
      assert im.mode == "CMYK"
    return path, rgb, False
  raise ValueError(kind)


@pytest.mark.parametrize("kind", ["L", "RGBA", "LA", "P", "I;16", "CMYK"])
def test_file_formats(lm, face, kind, tmp_path):
  rgb, box = face
  path, expect, exact = _write(kind, rgb, tmp_path / kind.replace(";", ""))
  loaded = crop.load_photo(path)
  assert loaded.mode == "RGB" and loaded.size == (rgb.shape[1],
                                                  rgb.shape[0])
  got = np.asarray(loaded)
  if exact:
    np.testing.assert_array_equal(got, expect)
  else:         # lossy JPEG: close to the colours (not inverted CMYK)
    assert np.abs(got.astype(int) - expect).mean() < 4
  _same_faces(_detect_box(lm, path, box), _detect_box(lm, got, box))
  if exact:
    _same_faces(_detect_box(lm, path, box), _detect_box(lm, expect, box))


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_jpeg_is_upright(lm, orientation, tmp_path):
  rgb, pts = pf.sample_face(pf.FACES[1])        # 384 x 291, not square
  path = tmp_path / f"rotated_{orientation}.jpg"
  stored = pf.save_exif_jpeg(path, rgb, orientation)
  assert stored.shape == (384, 291, 3)
  # What a viewer shows: the stored grid turned by the EXIF orientation.
  upright = np.rot90(stored, -1 if orientation == 6 else 1)
  assert upright.shape == rgb.shape
  assert np.abs(upright.astype(int) - rgb).mean() < 4
  for source in (path, Image.open(path)):
    np.testing.assert_array_equal(np.asarray(crop.load_photo(source)),
                                  upright)
  box = crop.landmark_box(pts)                   # upright coordinates
  _same_faces(_detect_box(lm, path, box), _detect_box(lm, upright, box))


def test_arrays_of_other_kinds(lm, face):
  rgb, box = face
  ref = _detect_box(lm, rgb, box)
  as_float = rgb.astype(np.float64) / 255.0
  np.testing.assert_array_equal(np.asarray(crop.load_photo(as_float)), rgb)
  _same_faces(_detect_box(lm, as_float, box), ref)
  _same_faces(_detect_box(lm, as_float.astype(np.float32), box), ref)
  rgba = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])
  _same_faces(_detect_box(lm, rgba, box), ref)
  g = _gray(rgb)
  np.testing.assert_array_equal(np.asarray(crop.load_photo(g)), _gray3(g))
  np.testing.assert_array_equal(np.asarray(crop.load_photo(g[:, :, None])),
                                _gray3(g))
  with pytest.raises(crop.DataError, match="shape"):
    lm.detect(np.zeros((10, 10, 2), np.uint8))


def test_very_large_image(lm, face, tmp_path):
  """A 5000 x 4000 photo holding the face upscaled 6x (each pixel a 6 x 6
  block) at an offset that is a multiple of 6.

  Comparable with the small image: the crop of the large image is first
  box-averaged by an integer factor k = floor(side / 512) and then resampled
  like the small one. With a box whose crop side is in [512, 597) px in the
  small image (k = 1) and six times that in the large one (k = 6), the
  6x-reduced large image *is* the small image shifted by offset / 6, so the
  crops are equal and the points scale back exactly:
  ``x_small = (x_large - offset + 0.5) / 6 - 0.5``.
  """
  rgb, box = face
  f = 6
  c = (box[:2] + box[2:]) / 2
  small_box = np.concatenate([c - 120, c + 120]).astype(np.float32)
  assert 512 <= crop.CROP_CONTEXT * 240 < 512 * (1 + 1 / f)
  offset = np.array([1200, 840])
  big = pf.paste((4000, 5000), [(rgb.repeat(f, 0).repeat(f, 1),
                                 tuple(offset))])
  path = tmp_path / "big.png"
  Image.fromarray(big).save(path, compress_level=1)
  big_box = ((small_box + 0.5) * f - 0.5 + np.tile(offset, 2)).astype(
      np.float32)
  small = lm.prepare(rgb, [small_box], "landmarks")
  large = lm.prepare(str(path), [big_box], "landmarks")
  assert large.image.size == (5000, 4000)
  np.testing.assert_array_equal(large.crops, small.crops)
  fs, fl = lm.finish([small, large])
  for key in ("points", "raw_points"):
    back = (getattr(fl[0], key) - offset + 0.5) / f - 0.5
    np.testing.assert_allclose(back, getattr(fs[0], key), rtol=0, atol=1e-3)
  # The detector runs on a downscaled copy (predict.detector_max_side) and
  # its box comes back in full-resolution pixels, on the face.
  found = lm.detect(str(path))
  assert len(found) == 1
  small_found = lm.detect(rgb)[0].box
  expect = (small_found + 0.5) * f - 0.5 + np.tile(offset, 2)
  iou = box_map_lib.iou(found[0].box, expect)[0, 0]
  assert iou > 0.7, (found[0].box, expect)


def test_flag_threshold_precedence():
  from configs import default  # pylint: disable=g-import-not-at-top
  from sgfan_jax import landmarker  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.refine.weight_threshold = 0.5
  # A model saved before predict.occluded_threshold: the refinement's.
  assert landmarker.flag_threshold(config) == 0.5
  config.predict.occluded_threshold = 0.2
  assert landmarker.flag_threshold(config) == 0.2
  assert landmarker.flag_threshold(config, 0.3) == 0.3
  with pytest.raises(ValueError, match=r"in \[0, 1\]"):
    landmarker.flag_threshold(config, 1.5)


def test_occluded_threshold_argument_sets_the_flags(face):
  rgb, box = face
  lm = Landmarker.from_pretrained(pf.tiny_model_dir(), occluded_threshold=0.1)
  assert lm.occluded_threshold == 0.1
  f = lm.detect(rgb, boxes=[box], box_format="landmarks")[0]
  np.testing.assert_array_equal(f.occluded, f.confidence < 0.1)


def test_shipped_model_flags_few_points_of_clean_faces():
  """The shipped model's flag threshold (predict.occluded_threshold, chosen
  on face300w:val by scripts/calibrate_flags.py) flags few points of clean
  faces. Measured on the 40 bundled sample faces with their landmark boxes:
  2.2 % flagged at 0.14 (8.7 % at the refinement threshold 0.4, 14.1 % at
  the paper's 0.5; the model shipped before flagged about half at 0.5).
  Bound: the issue's target, 10 %."""
  import glob  # pylint: disable=g-import-not-at-top
  from sgfan_jax import pts_io  # pylint: disable=g-import-not-at-top
  shipped = Landmarker.from_pretrained()
  assert shipped.occluded_threshold < shipped.config.refine.weight_threshold
  rates = []
  for path in sorted(glob.glob(str(pf.SAMPLE / "*" / "*" / "*.jpg")) +
                     sorted(glob.glob(str(pf.SAMPLE / "afw" / "*.jpg")))):
    pts = pts_io.read_pts(path[:-4] + ".pts")
    f = shipped.detect(path, boxes=[crop.landmark_box(pts)],
                       box_format="landmarks")[0]
    np.testing.assert_array_equal(f.occluded,
                                  f.confidence < shipped.occluded_threshold)
    rates.append(f.occluded.mean())
  assert len(rates) >= 20
  assert np.mean(rates) <= 0.10, np.mean(rates)


def test_second_pass_is_a_recrop_on_the_first_points(face):
  """second_pass=True equals, by hand: detect, take the tight box of the
  refined points, detect again on that landmark box."""
  rgb, box = face
  one = Landmarker.from_pretrained(pf.tiny_model_dir())
  two = Landmarker.from_pretrained(pf.tiny_model_dir(), second_pass=True)
  first = one.detect(rgb, boxes=None)
  second = two.detect(rgb, boxes=None)
  assert len(first) == len(second) >= 1
  for f1, f2 in zip(first, second):
    lb = crop.landmark_box(f1.points).astype(np.float32)
    np.testing.assert_allclose(f2.face_box, lb, atol=1e-4)
    by_hand = one.detect(rgb, boxes=[lb], box_format="landmarks")[0]
    np.testing.assert_allclose(f2.points, by_hand.points, atol=1e-3)
    np.testing.assert_array_equal(f2.box, f1.box)   # the detector's box
  # Boxes given by the caller are not re-cropped.
  given = two.detect(rgb, boxes=[box], box_format="landmarks")[0]
  np.testing.assert_allclose(
      given.points, one.detect(rgb, boxes=[box], box_format="landmarks")[0]
      .points, atol=1e-5)
