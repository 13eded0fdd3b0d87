r"""Video speed, error and jitter: tracking vs detecting every frame,
smoothing on and off.

  .venv/bin/python benchmarks/video.py [--frames 60] \
      [--out_md benchmarks/results/video.md]

Clip: a 300-W test photo of the bundled sample (``--photo``, HELEN test
``3214115970_3``) moved, zoomed (+-12 %) and turned (+-12 deg) along a
smooth path (``video_eval.MotionPath``: the face's landmark box about 250
px, centre swinging +-150 x +-60 px) in a 1280x720 frame at 30 fps, one face,
encoded to H.264 (``video.write_video``) and decoded back; the true points
move with the photo.

(a) frames/s of ``Landmarker.track`` over the decoded frames in memory
    (detector + crop + network + refinement + smoothing), after a warm-up
    (compilation) on other frames, for: tracking (``detect_every`` = the
    config's, 30) and detecting on every frame (``detect_every=1``), each
    with and without smoothing; and of the whole command path
    (``video.predict_video``: decode, track, JSON lines, npz, overlay video
    encode) at the default settings.
(b) error (inter-ocular NME) and jitter (``video_eval.jitter``: mean
    second difference of the residual, % of the inter-ocular distance) on
    the 720p clip and on the 256x256 32-frame clip of tests/test_video.py,
    for the same four settings and for the One Euro filter applied directly
    to the points (the same shape settings, per coordinate) instead of
    ``tracking.FaceSmoother``'s pose + shape split.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import timing  # pylint: disable=g-import-not-at-top


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--frames", type=int, default=60)
  parser.add_argument("--photo", default="3214115970_3")
  parser.add_argument("--out_md", default=str(REPO / "benchmarks" / "results"
                                              / "video.md"))
  args = parser.parse_args(argv)
  machine = timing.machine()

  import av  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sgfan_jax import tracking  # pylint: disable=g-import-not-at-top
  from sgfan_jax import video  # pylint: disable=g-import-not-at-top
  from sgfan_jax import video_eval  # pylint: disable=g-import-not-at-top
  from sgfan_jax.landmarker import Landmarker  # pylint: disable=g-import-not-at-top
  from tests import photo_fixtures as pf  # pylint: disable=g-import-not-at-top

  lm = Landmarker.from_pretrained()
  vc = lm.config.video
  shape_args = (vc.min_cutoff, vc.beta, vc.d_cutoff)
  smooth_args = shape_args + (vc.pose_min_cutoff, vc.pose_beta)
  rgb, pts = pf.sample_face(args.photo)
  path = video_eval.MotionPath(ax=0.12, ay=0.08, size=0.35)
  frames, truth, times = video_eval.moving_face_clip(
      rgb, pts, 1280, 720, args.frames + 4, 30.0, path)
  tmp = tempfile.mkdtemp()
  clip = os.path.join(tmp, "clip720.mp4")
  video.write_video(clip, frames[4:], times[4:] - times[4], rate=30)
  decoded = video.read_frames(clip)
  truth, times = truth[4:], times[4:] - times[4]
  # Warm-up: compile on frames that are not timed.
  for kw in ({}, {"detect_every": 1}):
    list(lm.track(list(frames[:4]), **kw))

  settings = [("tracking (detect every 30)", {}),
              ("detect every frame", {"detect_every": 1})]
  speed_rows, quality = [], {}
  for name, kw in settings:
    for smooth in (False, True):
      tracker = tracking.FaceTracker(lm, smooth=smooth, **kw)
      t0 = time.perf_counter()
      out = [tracker.step(f) for f in decoded]
      dt = time.perf_counter() - t0
      speed_rows.append((name, smooth, len(decoded) / dt,
                         tracker.stats.detections))
      if not smooth:
        quality[name] = out
  t0 = time.perf_counter()
  result = video.predict_video(lm, clip, os.path.join(tmp, "out", "clip"),
                               progress=False)
  command_fps = result.frames / (time.perf_counter() - t0)

  def table(out, truth, times):
    rows = []
    for name, frames_faces in out.items():
      raw, found = video_eval.track_points(frames_faces, truth)
      assert found.all(), name
      smoothed = np.stack([r[0] for r in tracking.smooth_tracks(
          frames_faces, times, *smooth_args)])
      direct_filter = tracking.OneEuroFilter(*shape_args)
      direct = np.stack([direct_filter(p, t, tracking.face_size(p))
                         for p, t in zip(raw, times)])
      for label, p in (("off", raw), ("on (pose + shape)", smoothed),
                       ("One Euro on the points", direct)):
        rows.append(f"| {name} | {label} | "
                    f"{100 * video_eval.clip_errors(p, truth).mean():.2f} | "
                    f"{100 * video_eval.jitter(p, truth):.2f} |")
    return rows

  q720 = table(quality, truth, times)
  small_frames, small_truth, small_times = video_eval.moving_face_clip(
      *pf.sample_face(pf.FACES[0]), 256, 256, 32, 25.0)
  small_clip = os.path.join(tmp, "clip256.mp4")
  video.write_video(small_clip, small_frames, small_times, rate=25)
  small_decoded = video.read_frames(small_clip)
  lm1 = Landmarker.from_pretrained(batch_size=1)
  q256 = table({name: list(lm1.track(small_decoded, smooth=False, **kw))
                for name, kw in settings}, small_truth, small_times)

  md = timing.report_header(
      "Video: frames/s, error and jitter (tracking vs detecting every frame, "
      "smoothing on/off)", "benchmarks/video.py", argv or sys.argv[1:],
      machine, f"jax {jax.__version__} ({jax.default_backend()}), av "
      f"{av.__version__} (FFmpeg {av.ffmpeg_version_info}), precision "
      f"{lm.precision}")
  md += ("Timings share two CPU cores with other jobs (load average above), "
         "so they vary by some 20 % from run to run; smoothing itself costs "
         "well under a millisecond a frame.\n\n")
  md += (f"Clip: {len(decoded)} frames 1280x720 at 30 fps, one face (HELEN "
         f"test {args.photo}, landmark box about 250 px) moving, zooming and "
         "turning along a smooth path; H.264 encoded and decoded back. "
         "Frames/s of `Landmarker.track` on the decoded frames in memory "
         "(one pass each, after compilation).\n\n")
  md += ("| setting | smoothing | frames/s | detector runs |\n"
         "| --- | --- | --- | --- |\n")
  for name, smooth, fps, det in speed_rows:
    md += f"| {name} | {'on' if smooth else 'off'} | {fps:.2f} | {det} |\n"
  md += (f"\nWhole command path (`video.predict_video`: decode, track with "
         f"the defaults, write JSON lines + npz + overlay H.264): "
         f"{command_fps:.2f} frames/s.\n\n")
  head = ("| setting | smoothing | NME % (inter-ocular) | jitter % |\n"
          "| --- | --- | --- | --- |\n")
  md += ("Error and jitter (jitter: mean over frames and points of |second "
         "difference of the residual to the true path| / inter-ocular "
         "distance, `video_eval.jitter`), 720p clip:\n\n" + head +
         "\n".join(q720) + "\n\n")
  md += ("The 256x256, 32-frame, 25 fps clip of tests/test_video.py (HELEN "
         f"test {pf.FACES[0]}, face about 100 px):\n\n" +
         head + "\n".join(q256) + "\n")
  timing.write_markdown(args.out_md, md)


if __name__ == "__main__":
  main()
