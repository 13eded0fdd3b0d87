"""Console logging set-up for the command-line entry points."""

import logging as py_logging

from absl import logging


class _DropLibraryInfo(py_logging.Filter):
  """Drops INFO records from chatty libraries (orbax, TFDS, grain).

  Also drops orbax's warning for a checkpoint saved without metrics while a
  best-checkpoint metric is configured: periodic checkpoints have no
  validation NME by design (checkpoints.py keeps them by recency).
  """

  _NOISY = ("orbax", "tensorflow_datasets", "grain", "etils")
  _EXPECTED_WARNINGS = ("Requested `tracked_metric`; did not provide metrics",)

  def filter(self, record):
    from_library = any(f"/{n}/" in record.pathname for n in self._NOISY)
    if record.levelno >= py_logging.WARNING:
      return not (from_library and str(record.msg).startswith(
          self._EXPECTED_WARNINGS))
    return not from_library


def quiet_libraries() -> None:
  """Keeps our INFO lines, hides the libraries' INFO lines."""
  handler = logging.get_absl_handler()
  handler.addFilter(_DropLibraryInfo())
  for name in ("orbax", "tensorflow_datasets", "grain", "absl"):
    py_logging.getLogger(name).addFilter(_DropLibraryInfo())
