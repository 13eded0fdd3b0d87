"""300-W TFDS builder (registers `face300w`)."""

from tfds_builders.face300w.face300w_dataset_builder import Builder
