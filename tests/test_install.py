"""`pip install .` gives an importable package with the model and command."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_pip_install_ships_the_model_and_the_command(tmp_path):
  target = tmp_path / "site"
  proc = subprocess.run(
      [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
       "--no-build-isolation", "--target", str(target), str(ROOT)],
      capture_output=True, text=True, timeout=600, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  installed = target / "sgfan_jax"
  assert (installed / "data" / "dlib_hog_box_map.json").is_file()
  model = installed / "pretrained" / "sgfan_lite_300w"
  for name in ("variables.msgpack", "config.json", "meta.json",
               "shape_dictionary.npz", "MODEL_CARD.md"):
    assert (model / name).is_file(), name
  assert (target / "bin" / "sgfan-jax").is_file()
  # Imported from elsewhere, the installed copy is used and loads offline.
  env = dict(os.environ, PYTHONPATH=str(target))
  code = ("import sgfan_jax, numpy as np; "
          "lm = sgfan_jax.Landmarker.from_pretrained(detector='none'); "
          "f = lm.detect(np.zeros((96, 96, 3), np.uint8)); "
          "print(sgfan_jax.__file__, len(f), f[0].points.shape)")
  run = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=600, cwd=tmp_path, env=env)
  assert run.returncode == 0, run.stderr[-3000:]
  path, count, shape = run.stdout.split(maxsplit=2)
  assert path.startswith(str(installed))
  assert count == "1" and shape.strip() == "(68, 2)"
