"""The predict command: folders, bad inputs, box files, outputs, exit codes.

In-process through ``predict.predict_paths`` (the command's loop) with the
tiny model of tests/photo_fixtures.py, and as real commands
(``python -m sgfan_jax.predict`` and the ``sgfan-jax`` console script) in
subprocesses started together at the beginning of the module, so their
start-up overlaps the in-process tests.
"""

import csv
import errno
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sgfan_jax import box_map as box_map_lib
from sgfan_jax import crop
from sgfan_jax import drawing
from sgfan_jax import inference
from sgfan_jax import predict
from sgfan_jax import pts_io
from sgfan_jax.landmarker import Landmarker
from tests import photo_fixtures as pf

REPO = pathlib.Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = pathlib.Path(sys.executable).parent / "sgfan-jax"
FACE_KEYS = {"box", "box_score", "face_box", "points", "raw_points",
             "face_score", "confidence", "occluded", "yaw", "pitch", "roll"}


def _tree(root: pathlib.Path):
  """The input tree (mixed-case extensions, a subfolder, bad files)."""
  tree = root / "photos"
  (tree / "sub").mkdir(parents=True)
  (tree / "locked").mkdir()
  group, group_boxes = pf.group_photo()
  Image.fromarray(group).save(tree / "Group.JPG", quality=95)
  Image.fromarray(pf.sample_face(pf.FACES[1])[0]).save(tree / "single.Png")
  Image.fromarray(pf.sample_face(pf.FACES[2])[0]).save(
      tree / "sub" / "face.jpeg", quality=95)
  Image.fromarray(np.full((200, 260, 3), 90, np.uint8)).save(
      tree / "sub" / "blank.png")
  (tree / "readme.txt").write_text("not an image extension: skipped\n")
  bad = pf.write_bad_files(tree / "sub")
  Image.fromarray(pf.sample_face(pf.FACES[3])[0]).save(
      tree / "locked" / "hidden.jpg", quality=95)
  # A face crop for --detector=none.
  rgb, pts = pf.sample_face(pf.FACES[0])
  Image.fromarray(rgb).save(root / "crop.png")
  return {"tree": tree, "group": tree / "Group.JPG",
          "group_boxes": group_boxes, "single": tree / "single.Png",
          "face": tree / "sub" / "face.jpeg",
          "blank": tree / "sub" / "blank.png", "locked": tree / "locked",
          "hidden": tree / "locked" / "hidden.jpg",
          "missing": root / "missing.jpg", "crop": root / "crop.png", **bad}


def _start(args, out):
  """Starts a command; its stdout/stderr go to files beside ``out`` (a pipe
  left unread while other tests run could fill up and stall it)."""
  env = dict(os.environ)
  env.pop("PYTHONPATH", None)           # the installed (editable) package
  logs = (open(f"{out}.stdout", "w"), open(f"{out}.stderr", "w"))
  proc = subprocess.Popen(args, cwd=str(REPO), env=env, stdout=logs[0],
                          stderr=logs[1], stdin=subprocess.DEVNULL)
  for f in logs:
    f.close()                           # the child holds its own copies
  return proc, out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  return _tree(tmp_path_factory.mktemp("predict_inputs"))


@pytest.fixture(scope="module", autouse=True)
def commands(files, tmp_path_factory):
  """The real commands, started in parallel; each entry -> (proc, out)."""
  model = pf.tiny_model_dir()
  out = tmp_path_factory.mktemp("command_outputs")
  bad_boxes = out / "bad_boxes.csv"
  bad_boxes.write_text("image,x0,y0,x1,y1\nsingle.Png,1,2,3\n")
  procs = {
      "tree": _start([sys.executable, "-m", "sgfan_jax.predict",
                      str(files["tree"]), str(files["missing"]),
                      "--out", str(out / "tree"), "--model", model,
                      "--progress=false"], out / "tree"),
      "console": _start([str(CONSOLE_SCRIPT), "predict", str(files["crop"]),
                         "--out", str(out / "console"), "--model", model,
                         "--detector=none", "--precision=bfloat16",
                         "--chips=64", "--progress=false"],
                        out / "console"),
      "bad_boxes": _start([sys.executable, "-m", "sgfan_jax.predict",
                           str(files["single"]), "--boxes", str(bad_boxes),
                           "--out", str(out / "bad"), "--model", model],
                          out / "bad"),
  }
  yield procs
  for proc, _ in procs.values():
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def _finish(commands, name, timeout=600):
  proc, out = commands[name]
  proc.wait(timeout=timeout)
  read = lambda ext: pathlib.Path(f"{out}.{ext}").read_text()
  return proc.returncode, read("stdout"), read("stderr"), out


@pytest.fixture(scope="module")
def lm():
  return Landmarker.from_pretrained(pf.tiny_model_dir())


def _read_summary(out):
  with open(pathlib.Path(out) / "summary.csv", newline="") as f:
    return {r["file"]: r for r in csv.DictReader(f)}


def _denied_scandir(locked, monkeypatch):
  """Makes ``locked`` unreadable to os.walk (root can read anything, so a
  chmod would not do it): os.scandir raises EACCES for it."""
  real = os.scandir

  def scandir(path="."):
    if os.path.abspath(os.fspath(path)) == os.path.abspath(locked):
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES),
                            os.fspath(path))
    return real(path)

  monkeypatch.setattr(os, "scandir", scandir)


@pytest.fixture(scope="module")
def tree_run(lm, files, tmp_path_factory):
  out = tmp_path_factory.mktemp("tree_out")
  with pytest.MonkeyPatch.context() as mp:
    _denied_scandir(files["locked"], mp)
    rows = predict.predict_paths(lm, [str(files["tree"]),
                                      str(files["missing"])], str(out),
                                 progress=False)
  return rows, out


# ---------------------------------------------------------------- in-process


def test_folder_tree_summary(files, tree_run):
  rows, out = tree_run
  by_file = {r["file"]: r for r in rows}
  s = lambda k: str(files[k])
  expect = {
      s("group"): ("ok", "3", ""),
      s("single"): ("ok", "1", ""),
      s("face"): ("ok", "1", ""),
      s("blank"): ("no_face", "0", "no face found"),
      s("text"): ("error", "0", "not an image"),
      s("empty"): ("error", "0", "empty file"),
      s("truncated"): ("error", "0", "truncated"),
      s("locked"): ("error", "0", "unreadable folder: Permission denied"),
      s("missing"): ("error", "0", "no such file or folder"),
  }
  assert set(by_file) == set(expect)      # readme.txt and locked/ skipped
  for path, (status, faces, reason) in expect.items():
    row = by_file[path]
    assert (row["status"], row["faces"]) == (status, faces), row
    assert reason in row["reason"], row
    if status == "error":
      assert not row["outputs"]
  # summary.csv says the same.
  summary = _read_summary(out)
  assert set(summary) == set(expect)
  for path, row in by_file.items():
    assert summary[path] == row
  # Outputs mirror the tree; bad inputs leave no outputs.
  names = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                 if p.is_file())
  assert names == sorted([
      "Group.json", "Group.png", "Group_1.pts", "Group_2.pts",
      "Group_3.pts", "single.json", "single.png", "single_1.pts",
      "sub/face.json", "sub/face.png", "sub/face_1.pts", "sub/blank.json",
      "sub/blank.png", "summary.csv"])
  blank = json.loads((out / "sub" / "blank.json").read_text())
  assert blank["faces"] == []


def test_multi_face_json_and_pts(files, tree_run):
  _, out = tree_run
  record = json.loads((out / "Group.json").read_text())
  with Image.open(files["group"]) as im:
    assert (record["width"], record["height"]) == im.size
  assert record["image"] == os.path.abspath(files["group"])
  assert "0-based" in record["coordinates"]
  assert "1-based" in record["coordinates"]
  faces = record["faces"]
  assert len(faces) == 3
  bmap = box_map_lib.load_default("dlib_hog")
  matched = set()
  for k, f in enumerate(faces, 1):
    assert set(f) == FACE_KEYS
    assert isinstance(f["box_score"], float)
    points = np.asarray(f["points"])
    assert points.shape == (68, 2)
    assert np.asarray(f["raw_points"]).shape == (68, 2)
    conf = np.asarray(f["confidence"])
    assert conf.shape == (68,)
    assert f["occluded"] == (conf < pf.TINY_THRESHOLD).tolist()
    # Each detection is one of the pasted faces.
    ious = box_map_lib.iou(bmap.apply(np.asarray(f["box"])),
                           np.stack(files["group_boxes"]))[0]
    assert ious.max() > 0.5, ious
    matched.add(int(ious.argmax()))
    # NAME_k.pts: 1-based values of face k's points (parsed by hand).
    written = pf.read_pts_text(out / f"Group_{k}.pts")
    np.testing.assert_allclose(written, points + 1.0, atol=1e-3)
    np.testing.assert_allclose(pts_io.read_pts(out / f"Group_{k}.pts"),
                               points, atol=1e-3)
  assert matched == {0, 1, 2}
  scores = [f["box_score"] for f in faces]
  assert scores == sorted(scores, reverse=True)


def test_overlay(files, tree_run):
  _, out = tree_run
  record = json.loads((out / "Group.json").read_text())
  photo = np.asarray(crop.load_photo(files["group"]))
  with Image.open(out / "Group.png") as im:
    assert im.size == (photo.shape[1], photo.shape[0])
    overlay = np.asarray(im.convert("RGB"))
  h, w = photo.shape[:2]
  r = drawing.marker_radius((w, h))
  reach = int(np.ceil(1.6 * r)) + int(round(r / 2)) + 3
  near = np.zeros((h, w), bool)

  def mark(ya, yb, xa, xb):       # rows ya..yb, columns xa..xb, clipped
    near[min(max(ya, 0), h):min(max(yb + 1, 0), h),
         min(max(xa, 0), w):min(max(xb + 1, 0), w)] = True

  hits = total = 0
  for f in record["faces"]:
    pts = np.asarray(f["points"])
    occ = np.asarray(f["occluded"])
    for (x, y), o in zip(pts, occ):
      xi, yi = int(round(x)), int(round(y))
      mark(yi - reach, yi + reach, xi - reach, xi + reach)
      if not o and 0 <= xi < w and 0 <= yi < h:
        total += 1
        hits += tuple(overlay[yi, xi]) == drawing.VISIBLE
    x0, y0, x1, y1 = [int(round(v)) for v in f["box"]]
    for xe in (x0, x1):
      mark(y0 - reach, y1 + reach, xe - reach, xe + reach)
    for ye in (y0, y1):
      mark(ye - reach, ye + reach, x0 - reach, x1 + reach)
  # Visible points are green dots (a few may lie under later markers).
  assert total >= 5 and hits >= 0.6 * total, (hits, total)
  changed = np.any(overlay != photo, axis=2)
  assert changed[near].any()
  # Away from every marker and box the photo is untouched.
  assert (~near).mean() > 0.3
  assert not changed[~near].any()


def test_boxes_json_and_csv_files(lm, files, tmp_path):
  rgb, pts = pf.sample_face(pf.FACES[1])
  box_single = crop.landmark_box(pts).tolist()
  _, pts2 = pf.sample_face(pf.FACES[2])
  b2 = crop.landmark_box(pts2)
  two = [b2.tolist(), (b2 + np.array([-5, 3, 5, -3])).tolist()]
  inputs = [str(files["single"]), str(files["face"]), str(files["group"])]
  json_path = tmp_path / "boxes.json"
  # Keys: a file name, and a path as listed.
  json_path.write_text(json.dumps({"single.Png": [box_single],
                                   str(files["face"]): two}))
  csv_path = tmp_path / "boxes.csv"
  with open(csv_path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["image", "x0", "y0", "x1", "y1"])
    w.writerow(["single.Png"] + box_single)
    for b in two:
      w.writerow([str(files["face"])] + b)
  results = {}
  for kind, path in (("json", json_path), ("csv", csv_path)):
    table = predict.read_boxes(str(path))
    out = tmp_path / f"out_{kind}"
    rows = predict.predict_paths(lm, inputs, str(out), boxes=table,
                                 box_format="landmarks", progress=False)
    assert [(r["status"], r["faces"]) for r in rows] == [
        ("ok", "1"), ("ok", "2"), ("ok", "3")]
    single = json.loads((out / "single.json").read_text())["faces"]
    np.testing.assert_allclose(single[0]["box"], box_single, atol=0.01)
    assert single[0]["box_score"] is None
    np.testing.assert_allclose(single[0]["face_box"], box_single, atol=0.01)
    face = json.loads((out / "face.json").read_text())["faces"]
    np.testing.assert_allclose([f["box"] for f in face], two, atol=0.01)
    assert (out / "face_2.pts").exists() and not (out / "face_3.pts").exists()
    # Images not in the file are detected.
    group = json.loads((out / "Group.json").read_text())["faces"]
    assert all(f["box_score"] is not None for f in group)
    results[kind] = (single, face)
  assert results["json"] == results["csv"]
  # The same points as the library for the same box.
  direct = lm.detect(str(files["single"]), boxes=[box_single],
                     box_format="landmarks")[0]
  np.testing.assert_allclose(results["json"][0][0]["points"], direct.points,
                             atol=2e-3)


def test_box_for_every_image(lm, files, tmp_path):
  box = predict.parse_box("90,100,290,300")
  assert box == [90.0, 100.0, 290.0, 300.0]
  rows = predict.predict_paths(lm, [str(files["single"]), str(files["face"])],
                               str(tmp_path), box=box, progress=False)
  assert [(r["status"], r["faces"]) for r in rows] == [("ok", "1")] * 2
  for stem in ("single", "face"):
    faces = json.loads((tmp_path / f"{stem}.json").read_text())["faces"]
    assert faces[0]["box"] == box
    np.testing.assert_allclose(faces[0]["face_box"],
                               lm.box_map.apply(np.asarray(box)), atol=0.01)
  for bad in ("10,10,5", "10,10,5,20", "a,b,c,d", "10,10,20,10"):
    with pytest.raises(predict.InputError, match="--box must be x0,y0,x1,y1"):
      predict.parse_box(bad)


@pytest.mark.parametrize("name,text,message", [
    ("list.json", "[[1, 2, 3, 4]]", "expected a JSON object"),
    ("syntax.json", "{\"a.jpg\": [[1, 2, 3, 4]]", "syntax.json: "),
    ("three.json", "{\"a.jpg\": [1, 2, 3]}", "three.json: "),
    ("fields.csv", "image,x0,y0,x1,y1\na.jpg,1,2,3,4\nb.jpg,1,2,3\n",
     "line 3: expected image,x0,y0,x1,y1, got 4 fields"),
    ("number.csv", "a.jpg,1,2,three,4\n", "number.csv: "),
])
def test_malformed_boxes_file(tmp_path, name, text, message):
  path = tmp_path / name
  path.write_text(text)
  with pytest.raises(predict.InputError, match=f"--boxes .*{message}"):
    predict.read_boxes(str(path))


def test_boxes_file_missing(tmp_path):
  with pytest.raises(predict.InputError, match="file not found"):
    predict.read_boxes(str(tmp_path / "nope.json"))


def test_bad_box_in_file_is_an_image_error(lm, files, tmp_path):
  table = {"single.Png": [[100, 100, 50, 200]]}
  rows = predict.predict_paths(lm, [str(files["single"]), str(files["face"])],
                               str(tmp_path), boxes=table, progress=False)
  assert rows[0]["status"] == "error"
  assert "x1 > x0" in rows[0]["reason"]
  assert (rows[1]["status"], rows[1]["faces"]) == ("ok", "1")   # goes on


# ------------------------------------------------------------------ commands


def test_command_on_a_tree_with_bad_files(commands, files, tree_run):
  rc, stdout, stderr, out = _finish(commands, "tree")
  assert "Traceback" not in stderr, stderr[-3000:]
  assert rc == 1, stderr[-3000:]
  summary = _read_summary(out)
  ok = {f for f, r in summary.items() if r["status"] == "ok"}
  assert ok == {str(files[k]) for k in ("group", "single", "face", "hidden")}
  assert summary[str(files["group"])]["faces"] == "3"
  for k in ("text", "empty", "truncated", "missing", "blank"):
    row = summary[str(files[k])]
    assert row["status"] != "ok"
    assert f"{row['status']}: {files[k]}: {row['reason']}" in stderr
  assert "4 of 9 images with faces, 6 faces" in stdout
  # The command and the library loop write the same predictions.
  _, lib_out = tree_run
  a = json.loads((out / "Group.json").read_text())["faces"]
  b = json.loads((lib_out / "Group.json").read_text())["faces"]
  record = json.loads((out / "Group.json").read_text())
  assert record["precision"] == inference.resolve_precision("auto")
  for fa, fb in zip(a, b):
    np.testing.assert_allclose(fa["points"], fb["points"], atol=2e-3)
    assert fa["box"] == fb["box"]


def test_console_script_all_good(commands, files):
  assert CONSOLE_SCRIPT.exists()
  rc, stdout, stderr, out = _finish(commands, "console")
  assert "Traceback" not in stderr, stderr[-3000:]
  assert rc == 0, stderr[-3000:]
  assert "1 of 1 images with faces, 1 faces" in stdout
  record = json.loads((out / "crop.json").read_text())
  assert record["precision"] == "bfloat16"
  h, w = pf.sample_face(pf.FACES[0])[0].shape[:2]
  assert record["faces"][0]["box"] == [-0.5, -0.5, w - 0.5, h - 0.5]
  assert (out / "crop_1.pts").exists() and (out / "crop.png").exists()
  assert _read_summary(out)[str(files["crop"])]["status"] == "ok"
  with Image.open(out / "crop_1_chip.png") as im:      # --chips=64
    assert im.size == (64, 64) and im.mode == "RGB"
  assert str(out / "crop_1_chip.png") in _read_summary(out)[str(
      files["crop"])]["outputs"].split(";")


def test_command_malformed_boxes_file_exit_2(commands):
  rc, _, stderr, out = _finish(commands, "bad_boxes")
  assert rc == 2, stderr[-3000:]
  assert "Traceback" not in stderr
  assert "error: --boxes" in stderr and "line 2" in stderr
  assert not (out / "summary.csv").exists()


def test_tiles_flag_builds_a_tiled_blazeface():
  from sgfan_jax import detectors  # pylint: disable=g-import-not-at-top
  lm = predict.load_landmarker(None, None, None, None, tiles=3)
  assert isinstance(lm.detector, detectors.BlazeFaceDetector)
  assert lm.detector.tile_grid == 3
  with pytest.raises(predict.InputError, match="--tiles must be >= 0"):
    predict.load_landmarker(None, None, None, None, tiles=-1)
  with pytest.raises(predict.InputError, match="needs a BlazeFace detector"):
    predict.load_landmarker(None, None, "dlib_hog", None, tiles=3)


def test_second_pass_flag_overrides_the_model():
  # The shipped model turns the second pass on (chosen on val); the flag
  # turns it off, and None keeps the model's choice.
  from sgfan_jax import landmarker  # pylint: disable=g-import-not-at-top
  saved = json.loads((pathlib.Path(landmarker.PRETRAINED_DIR)
                      / landmarker.DEFAULT_MODEL / "config.json").read_text())
  lm = predict.load_landmarker(None, None, None, None)
  assert lm.second_pass is bool(saved["predict"]["second_pass"])
  for value in (False, True):
    lm = predict.load_landmarker(None, None, None, None, second_pass=value)
    assert lm.second_pass is value
