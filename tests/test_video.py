"""Video in and out (PyAV) and landmarks through video, without video from
outside.

* Reading and writing: variable-frame-rate time stamps survive a round trip;
  rotation metadata: frames stored sideways with a display matrix come back
  upright, and the matrix in the file is checked against the mp4 standard's
  ``tkhd`` layout (ISO/IEC 14496-12), parsed here from the bytes.
* Accuracy: a clip made from a bundled 300-W test photo moved, zoomed and
  turned along a known smooth path (the true points move with it), encoded
  to H.264 and read back: error (inter-ocular NME) and frame-to-frame jitter
  (``video_eval.jitter``) of tracking vs detecting every frame, with and
  without smoothing.
* The command: ``predict`` on a video, a truncated video, a text file named
  ``.mp4`` and a photo together.
* Real sequences: ``../shared/data/ytf68`` (three frames of each YouTube
  Faces clip, with points on every frame).
"""

import collections
import csv
import json
import os
import struct

import numpy as np
import pytest

from sgfan_jax import crop
from sgfan_jax import metrics
from sgfan_jax import predict
from sgfan_jax import tracking
from sgfan_jax import video
from sgfan_jax.landmarker import Landmarker
from sgfan_jax import video_eval
from tests import photo_fixtures as pf
from tests import video_fixtures as vf

# ------------------------------------------------------------ reading/writing


def test_variable_frame_rate_round_trip(tmp_path):
  periods = [0.04, 0.04, 0.1, 1 / 30, 0.25, 0.04, 0.02, 0.04, 0.06, 0.04]
  times = np.concatenate([[0.0], np.cumsum(periods)])
  # Smooth images (x264 keeps them close); one column per frame index.
  base = np.linspace(0, 200, 64)[None, :, None] * np.ones((48, 1, 3))
  frames = [np.clip(base + 5 * k, 0, 255).astype(np.uint8) for k in
            range(len(times))]
  path = str(tmp_path / "vfr.mp4")
  video.write_video(path, frames, times, rate=25)
  with video.VideoReader(path) as reader:
    got = list(reader)
  assert reader.error is None
  assert reader.frames == len(times) == len(got)
  assert [f.index for f in got] == list(range(len(times)))
  np.testing.assert_allclose([f.time for f in got], times, atol=1 / 90000)
  for f, want in zip(got, frames):
    assert f.image.shape == (48, 64, 3)
    assert np.abs(f.image.astype(int) - want).mean() < 3


def _tkhd_matrix(path):
  """The first ``tkhd`` box's 3x3 matrix (ISO/IEC 14496-12 8.3.2): a, b, u,
  c, d, v, x, y, w; a-d, x, y in 16.16 fixed point. A stored point (p, q)
  is shown at (a p + c q + x, b p + d q + y)."""
  data = open(path, "rb").read()
  at = data.index(b"tkhd")
  version = data[at + 4]
  # After the type: version/flags (4), times, track id, reserved, duration
  # (version 1: 8+8+4+4+8, version 0: 4+4+4+4+4), reserved (8), layer,
  # alternate group, volume, reserved (2 each).
  offset = at + 4 + 4 + (32 if version == 1 else 20) + 8 + 8
  values = struct.unpack(">9i", data[offset:offset + 36])
  a, b, _, c, d, _, _, _, _ = values
  return np.array([[a, c], [b, d]], np.float64) / 65536.0


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_honoured(tmp_path, rotation):
  """A portrait phone clip: stored sideways plus a display matrix."""
  upright = np.full((64, 48, 3), 40, np.uint8)
  upright[:16, :12] = (250, 30, 30)          # red block top-left
  upright[-16:, -12:] = (30, 30, 250)        # blue block bottom-right
  k = rotation // 90
  stored = np.ascontiguousarray(np.rot90(upright, -k))   # turned clockwise
  path = str(tmp_path / f"rot{rotation}.mp4")
  video.write_video(path, [stored] * 3, [0.0, 0.04, 0.08], rate=25,
                    rotation=rotation)
  # The file says so in the mp4 standard's terms: the display matrix turns
  # the stored frame by `rotation` degrees counter-clockwise on screen
  # (y down): the stored x axis (1, 0) is shown along (cos r, -sin r).
  r = np.radians(rotation)
  np.testing.assert_allclose(_tkhd_matrix(path) @ [1, 0],
                             [np.cos(r), -np.sin(r)], atol=1e-4)
  with video.VideoReader(path) as reader:
    got = list(reader)
  assert reader.rotation == rotation
  assert (reader.width, reader.height) == (48, 64)
  assert len(got) == 3
  for f in got:
    assert f.image.shape == upright.shape
    assert np.abs(f.image.astype(int) - upright).mean() < 4


def test_rotation_from_metadata_conventions():
  # Display matrix angle (counter-clockwise) wins; the legacy 'rotate' tag
  # is clockwise degrees.
  assert video.rotation_from_metadata(90, {}) == 90
  assert video.rotation_from_metadata(-90, {}) == 270
  assert video.rotation_from_metadata(-180, {}) == 180
  assert video.rotation_from_metadata(0, {"rotate": "90"}) == 270
  assert video.rotation_from_metadata(0, {"rotate": "270"}) == 90
  assert video.rotation_from_metadata(90, {"rotate": "90"}) == 90
  assert video.rotation_from_metadata(0, {"rotate": "x"}) == 0
  assert video.rotation_from_metadata(0, {}) == 0


# ---------------------------------------------------------- synthetic clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
  """The synthetic clip as an mp4 and its passes through the tracker."""
  folder = tmp_path_factory.mktemp("clip")
  frames, truth, times = vf.synthetic_clip()
  path = str(folder / "clip.mp4")
  video.write_video(path, frames, times, rate=vf.CLIP_FPS)
  decoded = video.read_frames(path)
  lm = vf.shipped_landmarker()
  tracked = list(lm.track(decoded, smooth=False))
  every = list(lm.track(decoded, smooth=False, detect_every=1))
  # Detection on every frame with one network pass per face (the shipped
  # model's second pass off): the detector's own box each frame.
  one = Landmarker.from_pretrained(batch_size=1, second_pass=False)
  every_one = list(one.track(decoded, smooth=False, detect_every=1))
  return {"path": path, "folder": folder, "truth": truth, "times": times,
          "decoded": decoded, "tracked": tracked, "every": every,
          "every_one_pass": every_one}


def _stats(points, truth):
  return (video_eval.clip_errors(points, truth).mean(),
          video_eval.jitter(points, truth))


def test_tracking_and_smoothing_error_and_jitter(clip):
  truth, times = clip["truth"], clip["times"]
  assert np.allclose([f.time for f in clip["decoded"]], times, atol=1e-4)
  tracked, found = video_eval.track_points(clip["tracked"], truth)
  assert found.all()
  # One face, one id all the way.
  assert {f.face_id for faces in clip["tracked"] for f in faces} == {0}
  assert all(len(faces) == 1 for faces in clip["tracked"])
  every, found_every = video_eval.track_points(clip["every"], truth)
  assert found_every.all()
  smoothed = np.stack([row[0] for row in tracking.smooth_tracks(
      clip["tracked"], times, *vf.smoothing_args())])
  err_t, jit_t = _stats(tracked, truth)
  err_e, jit_e = _stats(every, truth)
  err_s, jit_s = _stats(smoothed, truth)
  print(f"NME / jitter (% inter-ocular): detect every frame {100 * err_e:.2f}"
        f" / {100 * jit_e:.2f}, tracking {100 * err_t:.2f} / "
        f"{100 * jit_t:.2f}, tracking + smoothing {100 * err_s:.2f} / "
        f"{100 * jit_s:.2f}")
  # The shipped model on this face (a HELEN test photo) is within 6 %.
  assert err_t < 0.06 and err_e < 0.06
  # Tracking crops from the points (the model's own box convention): as
  # accurate as detecting every frame and about as steady, at one network
  # pass and no detection per frame. Measured with the session-8 model
  # (NME / jitter, % inter-ocular): tracking 2.24 / 1.41, detection every
  # frame 2.32 / 1.36 with one pass, 2.22 / 1.19 with the second pass (the
  # shipped default: this frame's points give the crop). The previous model
  # was steadier tracked than detected; this one is not.
  assert err_t < err_e * 1.1
  one, found_one = video_eval.track_points(clip["every_one_pass"], truth)
  assert found_one.all()
  err_1, jit_1 = _stats(one, truth)
  print(f"detect every frame, one pass: {100 * err_1:.2f} / "
        f"{100 * jit_1:.2f}")
  assert jit_t < 1.15 * jit_1 and jit_t < 1.3 * jit_e
  # Smoothing removes a good part of the jitter and costs no accuracy.
  assert jit_s < 0.75 * jit_t
  assert err_s < err_t + 0.002


def test_detection_runs_only_where_it_should(clip):
  lm = vf.shipped_landmarker()
  tracker = tracking.FaceTracker(lm, smooth=False, detect_every=10)
  for frame in clip["decoded"]:
    tracker.step(frame)
  # Frames 0, 10, 20, 30 of 32 (the face stays confident and inside).
  assert tracker.stats.detections == 4
  assert tracker.stats.frames == tracker.stats.faces == len(clip["decoded"])
  assert tracker.stats.ids == 1


@pytest.fixture(scope="module")
def command_run(clip):
  """``predict`` over the clip, its truncated copy, a text file named .mp4
  and a photo, in one run (default video settings: smoothing on)."""
  folder = clip["folder"]
  data = open(clip["path"], "rb").read()
  cut = str(folder / "cut.mp4")
  with open(cut, "wb") as f:
    f.write(data[:int(len(data) * 0.6)])
  text = str(folder / "text.mp4")
  with open(text, "w") as f:
    f.write("this is not a video\n")
  photo = str(pf.face_path())
  out = str(folder / "out")
  rows = predict.predict_paths(vf.shipped_landmarker(),
                               [clip["path"], cut, text, photo], out,
                               progress=False,
                               video_options={"overlay_video": True})
  return {r["file"]: r for r in rows}, out, cut, text, photo


def _jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_command_writes_jsonl_npz_overlay(clip, command_run):
  rows, out, _, _, photo = command_run
  row = rows[clip["path"]]
  assert row["status"] == "ok" and row["faces"] == "1", row
  base = os.path.join(out, "clip")
  assert row["outputs"].split(";") == [base + ".jsonl", base + ".npz",
                                       base + "_overlay.mp4"]
  lines = _jsonl(base + ".jsonl")
  assert [l["frame"] for l in lines] == list(range(vf.CLIP_FRAMES))
  np.testing.assert_allclose([l["time"] for l in lines], clip["times"],
                             atol=1e-5)
  face = lines[5]["faces"][0]
  assert face["id"] == 0
  assert np.asarray(face["points"]).shape == (68, 2)
  assert len(face["confidence"]) == 68 and len(face["occluded"]) == 68
  arrays = np.load(base + ".npz")
  assert arrays["points"].shape == (vf.CLIP_FRAMES, 68, 2)
  np.testing.assert_array_equal(arrays["frame"], np.arange(vf.CLIP_FRAMES))
  np.testing.assert_array_equal(arrays["face_id"], 0)
  assert arrays["confidence"].shape == arrays["occluded"].shape == (
      vf.CLIP_FRAMES, 68)
  np.testing.assert_allclose(arrays["box"][5], crop.landmark_box(
      arrays["points"][5]))
  np.testing.assert_allclose(np.asarray(face["points"]), arrays["points"][5],
                             atol=1e-3)
  # The command smooths by default, and smoothing never feeds back into the
  # crops: its points are the unsmoothed API pass filtered afterwards.
  want = np.stack([r[0] for r in tracking.smooth_tracks(
      clip["tracked"], clip["times"], *vf.smoothing_args())])
  np.testing.assert_allclose(arrays["points"], want, atol=1e-3)
  # The overlay: same frames, same time stamps, points drawn in green.
  with video.VideoReader(base + "_overlay.mp4") as reader:
    shown = list(reader)
  assert len(shown) == vf.CLIP_FRAMES and reader.error is None
  np.testing.assert_allclose([f.time for f in shown], clip["times"],
                             atol=1e-4)
  x, y = np.round(arrays["points"][3][30]).astype(int)     # nose tip
  r, g, b = shown[3].image[y, x].astype(int)
  assert g > 150 and r < 120 and b < 120, (r, g, b)
  assert rows[photo]["status"] == "ok"


def test_command_bad_videos_keep_what_was_read(clip, command_run):
  rows, out, cut, text, _ = command_run
  row = rows[text]
  assert row["status"] == "error"
  assert "not a video FFmpeg can read" in row["reason"]
  row = rows[cut]
  assert row["status"] == "truncated", row
  assert "damaged or truncated" in row["reason"] or "ends after" in (
      row["reason"])
  lines = _jsonl(os.path.join(out, "cut.jsonl"))
  kept = len(lines)
  assert 5 <= kept < vf.CLIP_FRAMES
  assert f"the {kept} frames before it are kept" in row["reason"]
  # The frames before the damage are the clip's own: same points.
  full = np.load(os.path.join(out, "clip.npz"))["points"]
  part = np.load(os.path.join(out, "cut.npz"))["points"]
  assert len(part) == kept
  np.testing.assert_allclose(part, full[:kept], atol=1e-3)
  with video.VideoReader(os.path.join(out, "cut_overlay.mp4")) as reader:
    assert len(list(reader)) == kept


def test_file_not_openable_raises_named_error(tmp_path):
  path = tmp_path / "empty.mkv"
  path.write_bytes(b"")
  with pytest.raises(video.VideoError, match="empty.mkv: empty file"):
    video.VideoReader(str(path))
  with pytest.raises(video.VideoError, match="nothing.mp4: not found"):
    video.VideoReader(str(tmp_path / "nothing.mp4"))
  assert video.is_video("A.MOV") and video.is_video("x.webm")
  assert not video.is_video("x.jpg")


# ------------------------------------------------------------ ytf68 frames

YTF_CLIPS = 8
FOUND_NME = 0.25


def _ytf_clips(root):
  """The first clips (sorted) of the training folder with their three
  frames: [(names, paths, points [3, 68, 2])]. (The test folder reuses some
  file names for other frames, so one folder is read.)"""
  points = {}
  with open(root / "training_frames_keypoints.csv", newline="") as f:
    reader = csv.reader(f)
    next(reader)
    for row in reader:
      points[row[0]] = np.asarray(row[1:], np.float32).reshape(68, 2)
  clips = collections.defaultdict(list)
  for name in sorted(points):
    person, cf = name[:-len(".jpg")].rsplit("_", 1)
    clips[(person, cf[0])].append(name)
  out = []
  for key in sorted(clips):
    names = clips[key]
    if len(names) == 3:
      out.append((names, [root / "training" / n for n in names],
                  np.stack([points[n] for n in names])))
    if len(out) == YTF_CLIPS:
      break
  return out


def test_ytf68_short_real_sequences(shared_data):
  """Three frames of each YouTube Faces clip as a sequence: where the face
  is found (points within 25 % inter-ocular of the annotation), it keeps
  one id through the clip, and the points are near the annotation."""
  lm = vf.shipped_landmarker()
  errors, same_id, found = [], 0, 0
  for names, paths, truth in _ytf_clips(shared_data / "ytf68"):
    out = list(lm.track([str(p) for p in paths]))
    ids = set()
    for faces, want in zip(out, truth):
      if not faces:
        errors.append(np.inf)
        continue
      nme = [metrics.nme(f.points[None], want[None], "inter_ocular")[0]
             for f in faces]
      errors.append(min(nme))
      if min(nme) < FOUND_NME:
        ids.add(faces[int(np.argmin(nme))].face_id)
        found += 1
    same_id += len(ids) == 1
  errors = np.asarray(errors)
  print(f"ytf68: {len(errors)} frames of {YTF_CLIPS} clips, face found in "
        f"{found}, NME median {np.median(errors):.3f}; one id in {same_id} "
        f"of {YTF_CLIPS} clips")
  assert same_id == YTF_CLIPS
  assert found >= 3 * YTF_CLIPS - 2       # found on nearly every frame
  # Small, compressed frames whose points are less exact than 300-W's
  # (README); the shipped model's 300-W common-set NME is about 5 %.
  assert np.median(errors) < 0.10
