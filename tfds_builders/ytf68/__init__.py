"""YouTube Faces 68-point frames TFDS builder (registers `ytf68`)."""

from tfds_builders.ytf68.ytf68_dataset_builder import Builder
