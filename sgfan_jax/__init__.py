"""sgfan-jax: Score-Guided Face Alignment Network (SGFAN) in JAX/Flax.

  import sgfan_jax
  lm = sgfan_jax.Landmarker.from_pretrained()
  faces = lm.detect("photo.jpg")      # [Face]: points, confidence, occluded

The pure-functional layer is :mod:`sgfan_jax.inference`. The public names
are imported on first use, so ``from sgfan_jax import host_allocator`` (which
commands run before JAX is imported) stays light.
"""

import importlib

__version__ = "0.2.0"

_PUBLIC = {
    "Face": "sgfan_jax.landmarker",
    "Landmarker": "sgfan_jax.landmarker",
    "ModelFileError": "sgfan_jax.inference",
    "load_model": "sgfan_jax.inference",
    "load_workdir": "sgfan_jax.inference",
}
__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):
  if name in _PUBLIC:
    return getattr(importlib.import_module(_PUBLIC[name]), name)
  raise AttributeError(f"module 'sgfan_jax' has no attribute {name!r}")


def __dir__():
  return __all__
