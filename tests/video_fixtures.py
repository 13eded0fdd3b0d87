"""Shared pieces of the video and tracking tests: the shipped model (built
once per process, batch 1 so one compile serves every face count) and the
synthetic clip (a bundled 300-W test photo moved, zoomed and turned along a
known path, sgfan_jax/video_eval.py)."""

import functools

from sgfan_jax import video_eval
from sgfan_jax.landmarker import Landmarker
from tests import photo_fixtures as pf

CLIP_SIZE = 256
CLIP_FRAMES = 32
CLIP_FPS = 25.0


@functools.lru_cache(maxsize=None)
def shipped_landmarker() -> Landmarker:
  return Landmarker.from_pretrained(batch_size=1)


@functools.lru_cache(maxsize=None)
def synthetic_clip(name: str = pf.FACES[0], num_frames: int = CLIP_FRAMES):
  """(frames uint8 [T, S, S, 3], true points [T, 68, 2], times [T])."""
  rgb, pts = pf.sample_face(name)
  return video_eval.moving_face_clip(rgb, pts, CLIP_SIZE, CLIP_SIZE,
                                     num_frames, CLIP_FPS)


def smoothing_args():
  """The FaceSmoother parameters of the shipped model's config."""
  vc = shipped_landmarker().config.video
  return (vc.min_cutoff, vc.beta, vc.d_cutoff, vc.pose_min_cutoff,
          vc.pose_beta)
