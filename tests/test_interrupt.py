"""A kill signal mid-training saves a checkpoint; the same command resumes."""

import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cmd(workdir, data_dir, steps):
  return [sys.executable, "main.py", "--config", "configs/test.py",
          "--workdir", str(workdir), f"--config.data.data_dir={data_dir}",
          f"--config.num_train_steps={steps}",
          "--config.checkpoint.every_steps=100000",   # only the signal saves
          "--config.log_every_steps=1", "--config.data.val_split=",
          "--config.data.eval_splits=()"]


def test_sigterm_saves_and_resume_continues(sample_tfds_dir, tmp_path):
  workdir = tmp_path / "w"
  proc = subprocess.Popen(_cmd(workdir, sample_tfds_dir, 100000), cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
      break
    time.sleep(0.5)
  assert proc.poll() is None, proc.communicate()[1][-3000:]
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  steps = sorted(int(d) for d in os.listdir(workdir / "checkpoints")
                 if d.isdigit())
  assert steps, "no checkpoint after SIGTERM"
  stopped = steps[-1]
  logged = [json.loads(l)["step"] for l in metrics.read_text().splitlines()]
  assert stopped == max(logged) >= 3      # nothing lost since the last step
  # The same command (a larger budget) resumes from that step.
  out = subprocess.run(_cmd(workdir, sample_tfds_dir, stopped + 2), cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  logged = [json.loads(l)["step"] for l in metrics.read_text().splitlines()]
  assert logged[-1] == stopped + 2
  assert stopped + 1 in logged
