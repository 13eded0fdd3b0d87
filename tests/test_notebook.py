"""notebooks/quickstart.ipynb runs top to bottom (CPU, offline)."""

import os

import nbformat
from nbclient import NotebookClient
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "quickstart.ipynb")


def _outputs(nb):
  text = []
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      if out.get("output_type") == "stream":
        text.append(out.get("text", ""))
      elif "data" in out and "text/plain" in out["data"]:
        text.append(out["data"]["text/plain"])
  return "\n".join(text)


def test_quickstart_runs_top_to_bottom():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": os.path.dirname(
                              NOTEBOOK)}})
  client.execute()
  errors = [o for c in nb.cells for o in c.get("outputs", [])
            if o.get("output_type") == "error"]
  assert not errors, errors
  text = _outputs(nb)
  assert "1 face(s)" in text
  assert "vmap confidence == batched: True" in text
  # Figures were drawn (heatmaps, score maps, overlays).
  images = [o for c in nb.cells for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert len(images) >= 3
