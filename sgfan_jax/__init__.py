"""sgfan-jax: Score-Guided Face Alignment Network (SGFAN) in JAX/Flax."""

__version__ = "0.1.0"
