"""The ytf68 TFDS builder (person-held-out splits) and extra training data.

A fake ytf68 folder is made from the bundled 300-W sample faces (their
.pts points, 0-based, written as the source's CSV rows), so these run
without ../shared.
"""

import csv
import pathlib
import shutil

import numpy as np
import pytest

from configs import default
from sgfan_jax import crop
from sgfan_jax import input_pipeline
from sgfan_jax import pts_io
from tfds_builders import build as build_lib
from tfds_builders.ytf68 import ytf68_dataset_builder as ytf

SAMPLE = pathlib.Path(__file__).resolve().parents[1] / "sample_data" / "300w"


def _fake_ytf(root: pathlib.Path, people=("Ann_Lee", "Bo", "Cy_D_E"),
              frames=("00", "01", "10")):
  """root/training + CSV: one sample face per frame, named Person_CF.jpg."""
  faces = sorted((SAMPLE / "afw").glob("*.pts"))
  (root / "training").mkdir(parents=True)
  truth = {}
  with open(root / "training_frames_keypoints.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow([""] + [str(i) for i in range(136)])
    k = 0
    for person in people:
      for cf in frames:
        pts_path = faces[k % len(faces)]
        k += 1
        name = f"{person}_{cf}.jpg"
        shutil.copy(pts_path.with_suffix(".jpg"), root / "training" / name)
        pts = pts_io.read_pts(pts_path, expected_points=68)   # 0-based
        truth[f"training/{name}"] = pts
        w.writerow([name] + [f"{v:.3f}" for v in pts.reshape(-1)])
  return truth


def test_person_of_and_bad_names():
  assert ytf.person_of("Luis_Fonsi_21.jpg") == "Luis_Fonsi"
  assert ytf.person_of("training/A_B_C_03.jpg") == "A_B_C"
  with pytest.raises(crop.DataError, match="Person_CF"):
    ytf.person_of("nodigits.jpg")


def test_val_people_is_the_documented_hash_choice():
  import hashlib
  people = [f"P{i}" for i in range(50)] * 3        # repeated frames
  held = ytf.val_people(people)
  # Independent reference: the 5 people (10 % of 50) with the lowest
  # sha256("0:" + person), whatever the order of the frames.
  ranked = sorted(set(people),
                  key=lambda p: hashlib.sha256(f"0:{p}".encode()).hexdigest())
  assert held == frozenset(ranked[:5])
  assert ytf.val_people(people[::-1]) == held
  assert ytf.val_people(["only", "only"]) == frozenset()


def test_bad_csv_row_names_file_and_line(tmp_path):
  p = tmp_path / "training_frames_keypoints.csv"
  p.write_text("h\nA_00.jpg," + ",".join(["1"] * 136) + "\nB_00.jpg,1,2\n")
  with pytest.raises(crop.DataError, match=r"keypoints.csv:3: expected 136"):
    ytf.read_csv(str(p))


def test_build_splits_by_person_and_stores_points(tmp_path):
  truth = _fake_ytf(tmp_path / "ytf68")
  builder = build_lib.build("ytf68", str(tmp_path / "ytf68"),
                            str(tmp_path / "tfds"))
  splits = {s: builder.as_data_source(split=s) for s in ("train", "val")}
  assert sum(len(s) for s in splits.values()) == len(truth) == 9
  people = {s: {ytf.person_of(src[i]["file_name"].decode()
                              if isinstance(src[i]["file_name"], bytes)
                              else src[i]["file_name"])
                for i in range(len(src))} for s, src in splits.items()}
  # Whole people are held out: no person in both splits.
  assert people["val"] and not people["val"] & people["train"]
  ex = splits["train"][0]
  name = ex["file_name"]
  name = name.decode() if isinstance(name, bytes) else name
  np.testing.assert_allclose(ex["landmarks_original"], truth[name],
                             atol=1e-3)
  # The crop maps back onto the original points.
  m = ex["crop_to_image"]
  back = ex["landmarks"] @ m[:, :2].T + m[:, 2]
  np.testing.assert_allclose(back, truth[name], atol=1e-2)
  assert builder.info.metadata["layout"] == "ibug68"


def test_missing_image_is_a_clear_error(tmp_path):
  _fake_ytf(tmp_path / "ytf68", people=("Ann", "Bo"), frames=("00",))
  (tmp_path / "ytf68" / "training" / "Bo_00.jpg").unlink()
  with pytest.raises(crop.DataError, match="Bo_00.jpg"):
    build_lib.build("ytf68", str(tmp_path / "ytf68"), str(tmp_path / "tfds"))


def test_concat_source_indexing():
  src = input_pipeline.ConcatSource([[0, 1, 2], [], [3, 4]])
  assert len(src) == 5
  assert [src[i] for i in range(5)] == [0, 1, 2, 3, 4]
  assert src[-1] == 4
  with pytest.raises(IndexError):
    src[5]


def test_open_training_source_concatenates_and_checks_geometry(tmp_path):
  _fake_ytf(tmp_path / "ytf68")
  data_dir = str(tmp_path / "tfds")
  build_lib.build("ytf68", str(tmp_path / "ytf68"), data_dir)
  cfg = default.get_config()
  cfg.data.train_dataset, cfg.data.train_split = "ytf68", "train"
  cfg.data.extra_train_splits = ("ytf68:val",)
  source, meta, primary = input_pipeline.open_training_source(cfg, data_dir)
  assert meta.num_examples == len(source) == 9
  assert len(primary) < 9 and meta.split == "train+ytf68:val"
  assert source[len(primary)]["file_name"] != source[0]["file_name"]
  # The training split itself, or a validation split, is refused.
  for spec, msg in (("ytf68:train", "already in the training data"),
                    ("face300w:val", "would leak")):
    cfg.data.extra_train_splits = (spec,)
    with pytest.raises(ValueError, match=msg):
      input_pipeline.open_training_source(cfg, data_dir)
  cfg.data.extra_train_splits = ("ytf68:nosuch",)
  with pytest.raises(ValueError, match="no split 'nosuch'"):
    input_pipeline.open_training_source(cfg, data_dir)
