"""Console logging set-up for the command-line entry points."""

import logging as py_logging

from absl import logging


class _DropLibraryInfo(py_logging.Filter):
  """Drops INFO records from chatty libraries (orbax, TFDS, grain)."""

  _NOISY = ("orbax", "tensorflow_datasets", "grain", "etils")

  def filter(self, record):
    if record.levelno >= py_logging.WARNING:
      return True
    return not any(f"/{n}/" in record.pathname for n in self._NOISY)


def quiet_libraries() -> None:
  """Keeps our INFO lines, hides the libraries' INFO lines."""
  handler = logging.get_absl_handler()
  handler.addFilter(_DropLibraryInfo())
  for name in ("orbax", "tensorflow_datasets", "grain", "absl"):
    py_logging.getLogger(name).addFilter(_DropLibraryInfo())
