"""Shared pytest fixtures.

Real data lives in ``../shared/data`` beside the clone (CI has it; a user's
machine usually does not). Tests that need it take the ``shared_data``
fixture and are skipped with a clear message where it is absent.
"""

import atexit
import os
import pathlib
import shutil
import tempfile

import pytest

# One XLA compilation cache for the whole test run, shared by this process
# and the command-line subprocesses the tests start (they inherit the
# environment): the same programs (the network at each padded batch size,
# BlazeFace) built by many Landmarkers are compiled once. Set before JAX is
# imported; a fresh folder per run, removed at exit. Measured: 14 % off
# test_landmarker + test_verification from a cold cache.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _XLA_CACHE = tempfile.mkdtemp(prefix="sgfan_test_xla_cache_")
  atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(
    os.environ.get("SGFAN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
SAMPLE_DATA = REPO_ROOT / "sample_data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """Path of ../shared/data; skips the test when it is not there."""
  if not (SHARED_DATA / "300w").is_dir():
    pytest.skip(f"real data not found at {SHARED_DATA} (set SGFAN_SHARED_DATA "
                "or place the shared/ folder beside the clone); the bundled "
                "sample in sample_data/ covers the rest")
  return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
  return REPO_ROOT


@pytest.fixture(scope="session")
def sample_tfds_dir(tmp_path_factory) -> pathlib.Path:
  """TFDS data dir with the bundled sample (sample_data/300w) built in it."""
  from tfds_builders import build  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path_factory.mktemp("sample_tfds")
  build.build("face300w", SAMPLE_DATA / "300w", data_dir)
  return data_dir
