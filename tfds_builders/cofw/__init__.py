"""COFW / COFW-68 TFDS builder (registers `cofw`)."""

from tfds_builders.cofw.cofw_dataset_builder import Builder
