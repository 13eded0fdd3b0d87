"""sgfan-jax: Score-Guided Face Alignment Network (SGFAN) in JAX/Flax.

  import sgfan_jax
  lm = sgfan_jax.Landmarker.from_pretrained()
  faces = lm.detect("photo.jpg")      # [Face]: points, confidence, occluded

The pure-functional layer is :mod:`sgfan_jax.inference`.
"""

__version__ = "0.2.0"

from sgfan_jax.inference import load_model
from sgfan_jax.inference import load_workdir
from sgfan_jax.inference import ModelFileError
from sgfan_jax.landmarker import Face
from sgfan_jax.landmarker import Landmarker

__all__ = ["Face", "Landmarker", "ModelFileError", "load_model",
           "load_workdir", "__version__"]
