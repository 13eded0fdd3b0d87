r"""Recipe search on face300w:val (project issue 18): run, evaluate, tabulate.

Runs each candidate of ``configs/search.py`` (``--runs``, knob lists such as
``sigma2`` or ``adamw1e-3,sigma2``) back to back in ``ROOT/NAME`` (a run that
is already there resumes, a finished one is skipped), evaluates each finished
run on face300w:val and its seeded occluded copy with
``benchmarks/compare_300w.py --split val`` (protocol (a) and (b), ours only),
and writes the table::

  nohup .venv/bin/python scripts/recipe_search.py --root /work/runs/search \
      --data_dir /work/tfds --runs sigma2 sigma3 adamw1e-3 norm \
      --out_md docs/RECIPE_SEARCH_RESULTS.md > /work/runs/search.log 2>&1 &

Columns: heatmaps-only and refined inter-pupil NME (%) on the 101 clean val
faces with the tight landmark box (protocol (a)), refined with the dlib
detector box (protocol (b)), the fraction of clean val points flagged
occluded, flag precision / recall / AP on the occluded copy of val, the
validation NME (heatmaps only) logged at every epoch, training images/s
(median of the logged rates), epochs and wall time (training only, this
machine, whatever else ran: say so where it matters). No test split is read.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from configs import search  # pylint: disable=g-import-not-at-top


def read_metrics(workdir: pathlib.Path):
  path = workdir / "metrics.jsonl"
  if not path.is_file():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      pass                                  # a line cut by a kill
  return rows


def total_steps(name: str) -> int:
  config = search.get_config(name)
  if config.num_train_steps > 0:
    return config.num_train_steps
  return config.num_epochs * (search.FACE300W_TRAIN // config.batch_size)


def finished(workdir: pathlib.Path, name: str) -> bool:
  steps = [r["step"] for r in read_metrics(workdir) if "val_nme" in r]
  return bool(steps) and max(steps) >= total_steps(name)


def train(name: str, workdir: pathlib.Path, data_dir: str) -> None:
  timing = workdir.parent / f"{workdir.name}.timing.json"
  log = workdir.parent / f"{workdir.name}.log"
  t0 = time.time()
  cmd = [sys.executable, str(REPO / "main.py"),
         f"--config={REPO / 'configs/search.py'}:{name}",
         f"--workdir={workdir}", f"--config.data.data_dir={data_dir}"]
  print(" ".join(cmd), flush=True)
  with open(log, "a", encoding="utf-8") as f:
    rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
  spent = time.time() - t0
  prev = json.loads(timing.read_text()) if timing.is_file() else {}
  prev["train_seconds"] = prev.get("train_seconds", 0.0) + spent
  prev["command"] = " ".join(cmd[1:])
  timing.write_text(json.dumps(prev))
  if rc:
    print(f"{name}: training exited with {rc} (see {log})", flush=True)


def evaluate(workdir: pathlib.Path) -> dict:
  out_json = workdir / "val_eval.json"
  if out_json.is_file():
    return json.loads(out_json.read_text())
  cmd = [sys.executable, str(REPO / "benchmarks/compare_300w.py"),
         "--split", "val", "--workdir", str(workdir), "--methods", "ours",
         "--out_json", str(out_json), "--out_md", str(workdir / "val_eval.md")]
  print(" ".join(cmd), flush=True)
  subprocess.check_call(cmd, cwd=REPO)
  return json.loads(out_json.read_text())


def row(name: str, workdir: pathlib.Path) -> str:
  rows = read_metrics(workdir)
  val = [(r["step"], r["val_nme"]) for r in rows if "val_nme" in r]
  rates = [r["images_per_sec"] for r in rows if "images_per_sec" in r]
  timing = workdir.parent / f"{workdir.name}.timing.json"
  secs = (json.loads(timing.read_text()).get("train_seconds")
          if timing.is_file() else None)
  ev = evaluate(workdir)["results"]
  a, b = ev["landmark"], ev["detector"]
  occ = a["occluded"]["ours_refined"]
  curve = " ".join(f"{100 * v:.1f}" for _, v in val)
  cells = [
      f"`{name}`",
      f"{100 * a['clean']['ours_raw']['nme_IP']:.2f}",
      f"{100 * a['clean']['ours_refined']['nme_IP']:.2f}",
      f"{100 * b['clean']['ours_refined']['nme_IP']:.2f}",
      f"{100 * a['clean']['ours_refined']['clean_flag_rate']:.1f}",
      f"{100 * occ['precision']:.1f} / {100 * occ['recall']:.1f} / "
      f"{100 * occ['ap']:.1f}",
      curve,
      f"{statistics.median(rates):.1f}" if rates else "-",
      f"{val[-1][0] / (search.FACE300W_TRAIN // search.get_config(name).batch_size):.0f}"
      if val else "-",
      f"{secs / 60:.0f} min" if secs else "-",
  ]
  return "| " + " | ".join(cells) + " |"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--root", default="/work/runs/search")
  p.add_argument("--data_dir", default="/work/tfds")
  p.add_argument("--runs", nargs="+", required=True,
                 help="configs/search.py knob lists, e.g. sigma2 adamw1e-3,"
                 "sigma2")
  p.add_argument("--train", action=argparse.BooleanOptionalAction,
                 default=True, help="train missing runs (else table only)")
  p.add_argument("--out_md", default="")
  args = p.parse_args(argv)
  root = pathlib.Path(args.root)
  root.mkdir(parents=True, exist_ok=True)
  for name in args.runs:
    search.get_config(name)                 # unknown knobs fail up front
  table = []
  for name in args.runs:
    workdir = root / name
    if args.train and not finished(workdir, name):
      train(name, workdir, args.data_dir)
    if finished(workdir, name):
      table.append(row(name, workdir))
      print(table[-1], flush=True)
    else:
      print(f"{name}: not finished, left out of the table", flush=True)
  header = (
      "| run | val NME IP heatmaps (a) | refined (a) | refined (b) | "
      "clean points flagged % | occluded copy: flag P / R / AP | "
      "val NME (heatmaps) per epoch | img/s | epochs | train wall |\n"
      "|---|---|---|---|---|---|---|---|---|---|")
  text = header + "\n" + "\n".join(table) + "\n"
  print(text)
  if args.out_md:
    pathlib.Path(args.out_md).write_text(text)


if __name__ == "__main__":
  main()
