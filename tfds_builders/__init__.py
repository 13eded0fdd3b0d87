"""Custom TFDS builders of sgfan-jax (``face300w``, ``cofw``).

Importing a builder package registers it with TFDS; ``tfds_builders.build``
has ``build`` / ``load_builder`` helpers and the command-line entry point.
"""
