"""Tests for sgfan_jax.report on synthetic predictions with known errors."""

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from configs import default as default_config
from sgfan_jax import metrics
from sgfan_jax import report
from sgfan_jax.reporting import summary

INTER_PUPIL = 40.0
INTER_OCULAR = 60.0


def face68(rng):
  """[68, 2] face: eye centres (10, 20) / (50, 20), outer corners 60 apart."""
  pts = rng.uniform([5, 5], [55, 75], size=(68, 2))
  pts[36:42] = [(0, 20), (5, 15), (15, 15), (20, 20), (15, 25), (5, 25)]
  pts[42:48] = [(40, 20), (45, 15), (55, 15), (60, 20), (55, 25), (45, 25)]
  return pts


def shifted(gt, shifts):
  """gt [M, N, 2] moved by a per-image vector shifts [M, 2]."""
  return gt + np.asarray(shifts, float)[:, None, :]


def make_config(**eval_fields):
  """The default config (thresholds 0.10 / 0.08 / 0.5) with eval overrides."""
  config = default_config.get_config()
  config.eval.update(eval_fields)
  return config


def make_splits():
  rng = np.random.default_rng(0)
  offset = np.array([30.0, 40.0])
  common_gt = np.stack([face68(rng) for _ in range(5)]) + offset
  chall_gt = np.stack([face68(rng) for _ in range(3)]) + offset
  # Baseline: every point of image i off by 5 px (3-4-5 triangle) in common,
  # 8 px in challenging; refined: 4 px / 6 px (pure x shifts).
  common = report.SplitResult(
      gt=common_gt, baseline=shifted(common_gt, [(3, 4)] * 5),
      refined=shifted(common_gt, [(4, 0)] * 5),
      weights=np.full((5, 68), 0.9),
      file_names=[f"helen/testset/{i}.jpg" for i in range(5)],
      images=[np.full((120, 130, 3), 128, np.uint8)] * 2,
      image_indices=[0, 3],
      image_transforms=np.tile(np.array([[1, 0, -20], [0, 1, -25]], float),
                               (2, 1, 1)))
  chall = report.SplitResult(
      gt=chall_gt, baseline=shifted(chall_gt, [(0, 8)] * 3),
      refined=shifted(chall_gt, [(6, 0)] * 3),
      weights=np.full((3, 68), 0.8), file_names=["ibug/a", "ibug/b", "ibug/c"])
  full = report.SplitResult(
      gt=np.concatenate([common_gt, chall_gt]),
      baseline=np.concatenate([common.baseline, chall.baseline]),
      refined=np.concatenate([common.refined, chall.refined]),
      weights=np.concatenate([common.weights, chall.weights]),
      file_names=common.file_names + chall.file_names)
  # COFW-68: 4 faces, points 48-67 (mouth) occluded in faces 0 and 1; the
  # baseline is off by 20 px on occluded points and 2 px elsewhere, the
  # refined shape by 6 px / 2 px. Weights are low exactly on the occluded
  # points except two visible points with low weight (false positives).
  cofw_gt = np.stack([face68(rng) for _ in range(4)])
  visible = np.ones((4, 68), bool)
  visible[:2, 48:] = False
  occ = ~visible[..., None]
  cofw_base = cofw_gt + np.where(occ, [0.0, 20.0], [2.0, 0.0])
  cofw_ref = cofw_gt + np.where(occ, [6.0, 0.0], [0.0, 2.0])
  weights = np.where(visible, 0.9, 0.1)
  weights[3, :2] = 0.2
  cofw = report.SplitResult(
      gt=cofw_gt, baseline=cofw_base, refined=cofw_ref, weights=weights,
      file_names=[f"{i}_points.mat" for i in range(1, 5)], visible=visible,
      images=[np.zeros((80, 90, 3), np.uint8)])
  return {"face300w:test_common": common, "face300w:test_challenging": chall,
          "face300w:test_full": full, "cofw:test": cofw}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("report"))
  splits = make_splits()
  config = make_config(failure_threshold=0.10, auc_threshold=0.08,
                       num_vis_images=8)
  config.refine.weight_threshold = 0.5
  paths = report.write_report(workdir, splits, "ibug68", config)
  with open(paths["results_json"]) as f:
    doc = json.load(f)
  with open(paths["results_md"]) as f:
    md = f.read()
  return workdir, splits, paths, doc, md


def test_results_json_hand_computed_300w(written):
  _, _, _, doc, _ = written
  s = doc["splits"]
  common = s["face300w:test_common"]["methods"]
  assert common["baseline"]["all"]["inter_pupil"]["nme"] == pytest.approx(
      5 / INTER_PUPIL)
  assert common["refined"]["all"]["inter_pupil"]["nme"] == pytest.approx(
      4 / INTER_PUPIL)
  assert common["baseline"]["all"]["inter_ocular"]["nme"] == pytest.approx(
      5 / INTER_OCULAR)
  chall = s["face300w:test_challenging"]["methods"]
  assert chall["baseline"]["all"]["inter_pupil"]["nme"] == pytest.approx(0.2)
  # Failure (inter-ocular > 0.1): 8/60 = 0.133 fails, 6/60 = 0.1 does not.
  assert chall["baseline"]["all"]["inter_ocular"]["failure_rate"] == 1.0
  assert chall["refined"]["all"]["inter_ocular"]["failure_rate"] == 0.0
  full = s["face300w:test_full"]["methods"]
  assert full["baseline"]["all"]["inter_pupil"]["nme"] == pytest.approx(
      (5 * 5 / 40 + 3 * 8 / 40) / 8)
  assert full["baseline"]["all"]["inter_ocular"]["failure_rate"] == (
      pytest.approx(3 / 8))
  # AUC@0.08 of 5 images at 4/60: exact area (0.08 - 1/15) / 0.08.
  assert common["refined"]["all"]["inter_ocular"]["auc"] == pytest.approx(
      (0.08 - 4 / 60) / 0.08, abs=1e-4 / 0.16)
  assert s["face300w:test_common"]["num_images"] == 5
  assert not s["face300w:test_common"]["has_occlusion"]
  assert "visible" not in common["baseline"]
  assert doc["thresholds"]["failure_threshold"] == 0.1
  assert doc["layout"] == "ibug68"


def test_results_json_matches_independent_metrics(written):
  _, splits, _, doc, _ = written
  for name, res in splits.items():
    for method in ("baseline", "refined"):
      pred = getattr(res, method)
      for norm in ("inter_pupil", "inter_ocular", "bbox"):
        v = metrics.nme(pred, res.gt, norm)
        got = doc["splits"][name]["methods"][method]["all"][norm]
        assert got["nme"] == pytest.approx(float(np.mean(v)))
        assert got["failure_rate"] == pytest.approx(float(np.mean(v > 0.1)))
        assert got["success_rate"] == pytest.approx(float(np.mean(v <= 0.1)))
        assert got["auc"] == pytest.approx(metrics.auc(v, 0.08))


def test_results_json_cofw_visible_occluded_and_detection(written):
  _, splits, _, doc, _ = written
  c = doc["splits"]["cofw:test"]
  res = splits["cofw:test"]
  assert c["has_occlusion"]
  base, ref = c["methods"]["baseline"], c["methods"]["refined"]
  # Visible points: 2 px everywhere -> 2 / 60 for both methods.
  assert base["visible"]["inter_ocular"]["nme"] == pytest.approx(2 / 60)
  assert ref["visible"]["inter_ocular"]["nme"] == pytest.approx(2 / 60)
  # Occluded points only exist in faces 0, 1 (NaN for 2, 3 -> ignored).
  assert base["occluded"]["inter_ocular"]["nme"] == pytest.approx(20 / 60)
  assert ref["occluded"]["inter_ocular"]["nme"] == pytest.approx(6 / 60)
  assert base["occluded"]["inter_ocular"]["num_valid"] == 2
  # All points, faces 0/1: (48 * 2 + 20 * 20) / 68 px; faces 2/3: 2 px.
  expect = np.mean([(48 * 2 + 20 * 20) / 68 / 60] * 2 + [2 / 60] * 2)
  assert base["all"]["inter_ocular"]["nme"] == pytest.approx(expect)
  np.testing.assert_allclose(
      base["all"]["inter_pupil"]["nme"],
      np.mean(metrics.nme(res.baseline, res.gt, "inter_pupil")))
  # Detection at 0.5: TP = 40 occluded points, FP = 2, FN = 0.
  d = c["occlusion_detection"]
  assert (d["true_positives"], d["false_positives"], d["false_negatives"]) == (
      40, 2, 0)
  assert d["precision"] == pytest.approx(40 / 42)
  assert d["recall"] == 1.0
  ref_det = metrics.occlusion_detection(res.weights, res.visible, 0.5)
  assert d["f1"] == pytest.approx(ref_det["f1"])
  assert len(d["pr_curve"]["precision"]) == 101
  assert c["weights"]["mean_occluded"] == pytest.approx(0.1)


def test_markdown_tables(written):
  _, _, _, _, md = written
  lines = md.splitlines()
  # Table 1 layout, inter-pupil: common 12.50 / 10.00, challenging 20.00 /
  # 15.00, full (5*12.5 + 3*20) / 8 = 15.31.
  assert "| Method | Common | Challenging | Full |" in lines
  assert "| Baseline (heatmap decoding) | 12.50 | 20.00 | 15.31 |" in lines
  assert "| Refined (score-guided) | 10.00 | 15.00 | 11.88 |" in lines
  assert "| Paper Table 1, 'Ours' | 4.16 | 7.54 | 4.78 |" in lines
  # Inter-ocular failure rate table (baseline: 0 / 100 / 37.50).
  i = lines.index("### Failure rate (%), inter-ocular NME > 0.1")
  assert lines[i + 4] == (
      "| Baseline (heatmap decoding) | 0.00 | 100.00 | 37.50 |")
  assert any(l.startswith("### AUC@0.08") for l in lines)
  # COFW section with all / visible columns and the paper numbers.
  assert "## COFW-68 (`cofw:test`, 4 faces)" in lines
  assert "| Paper, baseline | 6.29 | — | 94.67 | — | — | — |" in lines
  assert "| Paper, SGFAN | 5.78 | — | 97.83 | — | — | — |" in lines
  cofw_ref = [l for l in lines if l.startswith("| Refined (score-guided) | ")
              and l.count("|") == 8]
  # Refined, inter-ocular: visible NME 2/60 = 3.33 %, no failures.
  assert "| 3.33 | 0.00 | 100.00 |" in cofw_ref[0]
  # Occlusion tables.
  assert any(l.startswith("| `cofw:test` | 40 / 272 | 0.952 | 1.000 |")
             for l in lines)
  assert "| `cofw:test` | 33.33 | 10.00 | 3.33 | 3.33 |" in lines
  # Summary has two rows per split.
  assert sum(l.startswith("| `face300w:test_full` |") for l in lines) == 2


def test_missing_splits_are_absent(tmp_path):
  splits = make_splits()
  subset = {"face300w:test_full": splits["face300w:test_full"]}
  paths = report.write_report(str(tmp_path), subset, "ibug68",
                              make_config())
  md = open(paths["results_md"]).read()
  assert "| Method | Full |" in md
  assert "Common" not in md and "Challenging" not in md
  assert "| Paper Table 1, 'Ours' | 4.78 |" in md
  assert "COFW" not in md and "## Occlusion" not in md
  doc = json.load(open(paths["results_json"]))
  assert list(doc["splits"]) == ["face300w:test_full"]
  assert doc["thresholds"] == {"failure_threshold": 0.1, "auc_threshold": 0.08,
                               "weight_threshold": 0.5}


def test_pngs_are_valid_images(written):
  workdir, _, paths, _, _ = written
  pngs = list(paths["ced"].values()) + list(paths["occlusion_pr"].values())
  for v in paths["vis"].values():
    pngs += v
  assert len(paths["ced"]) == 4
  assert list(paths["occlusion_pr"]) == ["cofw:test"]
  assert len(paths["vis"]["face300w:test_common"]) == 2
  assert len(paths["vis"]["cofw:test"]) == 1
  assert paths["vis"]["face300w:test_full"] == []
  assert os.path.basename(paths["ced"]["face300w:test_common"]) == (
      "ced_face300w_test_common.png")
  for p in pngs:
    assert p.startswith(workdir) and os.path.getsize(p) > 1000
    with Image.open(p) as im:
      im.verify()
    with Image.open(p) as im:
      assert im.format == "PNG" and min(im.size) >= 100
      # Not a blank canvas: a plot has many distinct colours.
      assert len(np.unique(np.asarray(im.convert("L")))) > 10


def test_npz_round_trip(written):
  _, splits, paths, _, _ = written
  for name, res in splits.items():
    with np.load(paths["predictions"][name]) as z:   # no pickle needed
      for key in ("gt", "baseline", "refined", "weights"):
        np.testing.assert_array_equal(z[key], getattr(res, key))
      assert list(z["file_names"]) == res.file_names
      if res.visible is not None:
        np.testing.assert_array_equal(z["visible"], res.visible)
      else:
        assert "visible" not in z
      np.testing.assert_allclose(
          z["nme_refined_all_inter_pupil"],
          metrics.nme(res.refined, res.gt, "inter_pupil"))


def test_config_thresholds_are_used(tmp_path):
  splits = make_splits()
  subset = {"face300w:test_challenging": splits["face300w:test_challenging"]}
  config = make_config(failure_threshold=0.15, auc_threshold=0.2,
                       num_vis_images=0)
  paths = report.write_report(str(tmp_path), subset, "ibug68", config)
  s = json.load(open(paths["results_json"]))["splits"]
  base = s["face300w:test_challenging"]["methods"]["baseline"]["all"]
  # 8/60 = 0.133 < 0.15: no failure now; AUC over [0, 0.2].
  assert base["inter_ocular"]["failure_rate"] == 0.0
  assert base["inter_ocular"]["auc"] == pytest.approx(
      (0.2 - 8 / 60) / 0.2, abs=1e-4 / 0.4)


def test_split_kind_and_safe_name():
  assert report.split_kind("face300w:test_common") == ("300w", "common")
  assert report.split_kind("face300w:test_challenging") == (
      "300w", "challenging")
  assert report.split_kind("face300w:test_full") == ("300w", "full")
  assert report.split_kind("face300w:train") == ("300w", None)
  assert report.split_kind("cofw:test") == ("cofw", None)
  assert report.split_kind("wflw:test") == ("other", None)
  assert report.safe_name("face300w:test_common") == "face300w_test_common"
  assert report.safe_name("a/b c:d") == "a_b_c_d"


def test_bad_input_raises(tmp_path):
  rng = np.random.default_rng(1)
  gt = np.stack([face68(rng) for _ in range(3)])
  good = dict(gt=gt, baseline=gt + 1, refined=gt, weights=np.ones((3, 68)),
              file_names=["a", "b", "c"])
  for change, message in [
      (dict(baseline=gt[:2]), "baseline must have shape"),
      (dict(weights=np.ones((3, 67))), "weights must have shape"),
      (dict(file_names=["a"]), "1 file names for 3 faces"),
      (dict(visible=np.ones((2, 68), bool)), "visible must have shape"),
      (dict(refined=np.full_like(gt, np.nan)), "refined contains NaN"),
      (dict(images=[np.zeros((8, 8, 3))], image_indices=[5]),
       "image_indices"),
  ]:
    with pytest.raises(ValueError, match=message):
      report.SplitResult(**{**good, **change})
  res = report.SplitResult(**good)
  with pytest.raises(ValueError, match="has 68 points, layout 'cofw29'"):
    report.write_report(str(tmp_path), {"cofw:test": res}, "cofw29",
                        make_config())
  with pytest.raises(ValueError, match="at least one split"):
    report.write_report(str(tmp_path), {}, "ibug68", make_config())
  with pytest.raises(ValueError, match="collide"):
    report.write_report(str(tmp_path), {"a:b": res, "a_b": res}, "ibug68",
                        make_config())


def test_json_has_no_nan(written):
  _, _, paths, doc, _ = written
  text = open(paths["results_json"]).read()
  assert "NaN" not in text and "Infinity" not in text
  # Undefined precision at a threshold below every weight is null.
  curve = doc["splits"]["cofw:test"]["occlusion_detection"]["pr_curve"]
  assert curve["precision"][0] is None
  published = doc["published"]["300w_table1_ours_nme_percent_inter_pupil"]
  assert math.isclose(published["full"], 4.78)


def test_per_image_nme_computed_once_per_split(tmp_path, monkeypatch):
  calls = []
  original = summary.per_image_nme

  def counting(result, layout):
    calls.append(result.num_images)
    return original(result, layout)

  monkeypatch.setattr(summary, "per_image_nme", counting)
  splits = make_splits()
  report.write_report(str(tmp_path), splits, "ibug68", make_config())
  assert calls == [s.num_images for s in splits.values()]
