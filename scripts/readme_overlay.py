r"""Redraws the README's overlay figure with the shipped model.

Three of the bundled sample's HELEN *test* photos (never trained on; the
first three by name), scaled to the same height and put side by side in one
JPEG, go through the folder command as a user would run it
(``sgfan-jax predict group/ --out preds/``); its overlay PNG becomes
``docs/images/predict_overlay_sample_test_faces.png``::

  .venv/bin/python scripts/readme_overlay.py
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys
import tempfile

from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
PHOTOS = REPO / "sample_data/300w/helen/testset"
OUT = REPO / "docs/images/predict_overlay_sample_test_faces.png"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--height", type=int, default=404)
  p.add_argument("--out", default=str(OUT))
  args = p.parse_args(argv)
  photos = sorted(PHOTOS.glob("*.jpg"))[:3]
  if len(photos) < 3:
    raise SystemExit(f"need 3 photos in {PHOTOS}, found {len(photos)}")
  ims = []
  for path in photos:
    im = Image.open(path).convert("RGB")
    ims.append(im.resize((round(im.width * args.height / im.height),
                          args.height), Image.BICUBIC))
  canvas = Image.new("RGB", (sum(i.width for i in ims), args.height))
  x = 0
  for im in ims:
    canvas.paste(im, (x, 0))
    x += im.width
  with tempfile.TemporaryDirectory() as tmp:
    group = pathlib.Path(tmp) / "group"
    group.mkdir()
    canvas.save(group / "sample_test_faces.jpg", quality=95)
    preds = pathlib.Path(tmp) / "preds"
    subprocess.run([sys.executable, "-c", "from sgfan_jax.cli import main; main()",
                    "predict",
                    str(group), "--out", str(preds)], check=True)
    overlay = next(preds.rglob("*.png"))
    shutil.copyfile(overlay, args.out)
    print((preds / "summary.csv").read_text() if (preds / "summary.csv")
          .is_file() else "")
  print(f"wrote {args.out} ({', '.join(p.name for p in photos)})")


if __name__ == "__main__":
  main()
