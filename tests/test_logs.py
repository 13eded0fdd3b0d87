"""The console filter keeps our messages and real warnings, drops library
INFO chatter and orbax's expected metrics-less-checkpoint warning."""

import logging

from sgfan_jax import logs


def _record(level, path, msg):
  return logging.LogRecord("x", level, path, 1, msg, None, None)


def test_library_info_and_expected_warning_dropped_rest_kept():
  f = logs._DropLibraryInfo()  # pylint: disable=protected-access
  orbax = "/venv/lib/python3.11/site-packages/orbax/checkpoint/x.py"
  ours = "/repo/sgfan_jax/train.py"
  assert not f.filter(_record(logging.INFO, orbax, "Saving checkpoint"))
  assert not f.filter(_record(
      logging.WARNING, orbax,
      "Requested `tracked_metric`; did not provide metrics."))
  assert f.filter(_record(logging.WARNING, orbax, "Checkpoint is corrupt"))
  assert f.filter(_record(logging.INFO, ours, "step 10: loss=1"))
  assert f.filter(_record(
      logging.WARNING, ours,
      "Requested `tracked_metric`; did not provide metrics."))
