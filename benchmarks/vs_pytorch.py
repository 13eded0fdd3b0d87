r"""SGFAN in JAX vs the same network in PyTorch, on this machine's CPU.

  .venv/bin/pip install -r benchmarks/requirements-bench.txt
  .venv/bin/python benchmarks/vs_pytorch.py [--widths 64,128,256] \
      [--rounds 1] [--conv_impl cpu] [--allocator both|tuned|default] \
      [--precision float32|bfloat16|both] \
      [--out benchmarks/results/vs_pytorch.md]

1. Equivalence (width ``--check_width``): parameter counts of both models
   equal ``model.count_params`` at every width; the flax weights are copied
   into the PyTorch module and both give the same heatmaps/score maps on the
   same input (eval and train mode) and the same Eq. 3 loss.
2. Speed and memory: each (framework, width) runs in a fresh subprocess,
   JAX and PyTorch alternating (order flipped every round): a train step at
   batch 10 (forward, Eq. 3 loss / B, backward, RMSProp with PyTorch's rule,
   BatchNorm statistics update; fixed random targets, so no augmentation on
   either side), forward latency at batch 1 and batch 10 (eval mode), each
   after warm-up, median of repeats; peak RSS of the subprocess
   (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), i.e. model + optimiser +
   train-step activations. The real jitted train step (with on-device
   augmentation and target rendering) is timed by benchmarks/train_step.py.
3. Precision (``--precision``), equal on both sides: 'float32', or
   'bfloat16' = JAX with config.model.dtype 'bfloat16' (sgfan_jax/conv.py:
   bfloat16 products with float32 accumulation, float32 parameters,
   statistics and loss) against PyTorch under
   ``torch.autocast("cpu", dtype=torch.bfloat16)`` (PyTorch's CPU mixed
   precision: convolutions in bfloat16, float32 parameters) for the forward
   passes and the train step's forward, the Eq. 3 loss computed in float32
   outside autocast (no GradScaler: bfloat16 has float32's exponent range).
   'both' gives a table per precision. The bfloat16 outputs of both are
   compared with float32 in the equivalence step (reported, not asserted).
4. Allocator: every worker of a table runs with the same glibc malloc
   setting, for both frameworks: 'tuned' (``host_allocator.TUNABLES``, which
   sgfan-jax's commands set for themselves) and 'default' (glibc's). Both
   frameworks allocate their big buffers through malloc; with glibc's
   defaults each call faults them in afresh (see host_allocator.py), which
   costs PyTorch's train step more than JAX's, so the 'default' table alone
   would flatter JAX.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks import timing  # pylint: disable=g-import-not-at-top,wrong-import-position
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

NUM_LANDMARKS = 68
BATCH = 10
SIZE = 128


def _peak_rss_mb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


_median_time = timing.median_time


# ------------------------------------------------------------------- workers

PRECISIONS = ("float32", "bfloat16")


def worker_jax(width, conv_impl, reps, precision="float32"):
  """Times the JAX model; returns a dict of results."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from configs import default as default_config
  from sgfan_jax import losses
  from sgfan_jax import model as model_lib
  from sgfan_jax import optim

  config = default_config.get_config()
  config.model.width = width
  config.model.conv_impl = conv_impl
  config.model.dtype = precision
  model = model_lib.create_model(config.model, NUM_LANDMARKS)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(BATCH, SIZE, SIZE, 3)), jnp.float32)
  heat_gt = jnp.asarray(rng.uniform(size=(BATCH, SIZE, SIZE, NUM_LANDMARKS)),
                        jnp.float32)
  score_gt = jnp.asarray(rng.uniform(size=heat_gt.shape), jnp.float32)
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x))(
      images[:1])
  tx = optim.create_optimizer(config, optax.constant_schedule(
      config.learning_rate))
  state = (variables["params"], variables["batch_stats"],
           tx.init(variables["params"]))

  def loss_fn(params, batch_stats, x):
    (heat, score), upd = model.apply(
        {"params": params, "batch_stats": batch_stats}, x, train=True,
        mutable=["batch_stats"])
    terms = losses.sgfan_loss(heat, score, heat_gt, score_gt,
                              config.loss_lambda)
    return terms["total"].sum() / x.shape[0], upd["batch_stats"]

  @jax.jit
  def forward(params, batch_stats, x):
    return model.apply({"params": params, "batch_stats": batch_stats}, x)

  def step(state, x):
    params, batch_stats, opt_state = state
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, x)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats,
            opt_state), loss

  step = jax.jit(step, donate_argnums=(0,))
  holder = [state]

  def run_step():
    holder[0], loss = step(holder[0], images)
    jax.block_until_ready(loss)

  out = {"params": model_lib.count_params(variables["params"])}
  out["train_s"] = _median_time(run_step, reps["warmup"], reps["train"])
  params, batch_stats = holder[0][0], holder[0][1]
  for b in (1, BATCH):
    x = images[:b]
    out[f"fwd{b}_s"] = _median_time(
        lambda: jax.block_until_ready(forward(params, batch_stats, x)),
        reps["warmup"], reps[f"fwd{b}"])
  return out


def worker_torch(width, reps, precision="float32"):
  """Times the PyTorch model; returns a dict of results."""
  import contextlib
  import numpy as np
  import torch
  import torch_sgfan

  def autocast():
    if precision == "bfloat16":
      return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()

  torch.manual_seed(0)
  model = torch_sgfan.SGFAN(NUM_LANDMARKS, width)
  rng = np.random.default_rng(0)
  images = torch.from_numpy(
      rng.normal(size=(BATCH, SIZE, SIZE, 3)).astype(np.float32)).permute(
          0, 3, 1, 2).contiguous()
  heat_gt = torch.from_numpy(rng.uniform(
      size=(BATCH, NUM_LANDMARKS, SIZE, SIZE)).astype(np.float32))
  score_gt = torch.from_numpy(rng.uniform(
      size=heat_gt.shape).astype(np.float32))
  opt = torch.optim.RMSprop(model.parameters(), lr=1e-4, alpha=0.99, eps=1e-8)

  def run_step():
    model.train()
    opt.zero_grad(set_to_none=True)
    with autocast():
      heat, score = model(images)
    # Eq. 3 in float32, outside autocast (as the JAX side computes it).
    loss = torch_sgfan.sgfan_loss(heat.float(), score.float(), heat_gt,
                                  score_gt)
    loss.backward()
    opt.step()

  out = {"params": torch_sgfan.count_params(model),
         "threads": torch.get_num_threads()}
  out["train_s"] = _median_time(run_step, reps["warmup"], reps["train"])
  model.eval()
  for b in (1, BATCH):
    x = images[:b].contiguous()

    def fwd():
      with torch.inference_mode(), autocast():
        model(x)
    out[f"fwd{b}_s"] = _median_time(fwd, reps["warmup"], reps[f"fwd{b}"])
  return out


# --------------------------------------------------------------- equivalence

def check_equivalence(width, widths, bf16=False):
  """Parameter counts at ``widths``; outputs on shared weights at ``width``.

  With ``bf16`` also each framework's bfloat16 outputs vs its float32 ones
  (max-abs relative error, reported only).
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  import torch_sgfan
  from sgfan_jax import losses
  from sgfan_jax import model as model_lib

  report = {}
  for w in widths:
    m = model_lib.SGFAN(num_landmarks=NUM_LANDMARKS, width=w)
    shapes = jax.eval_shape(lambda m=m: m.init(
        jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 3))))
    n_jax = model_lib.count_params(shapes["params"])
    n_torch = torch_sgfan.count_params(torch_sgfan.SGFAN(NUM_LANDMARKS, w))
    if n_jax != n_torch:
      raise AssertionError(f"width {w}: {n_jax} JAX vs {n_torch} PyTorch params")
    report[f"params_w{w}"] = n_jax

  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
  heat_gt = rng.uniform(size=(2, SIZE, SIZE, NUM_LANDMARKS)).astype(np.float32)
  score_gt = rng.uniform(size=heat_gt.shape).astype(np.float32)
  m = model_lib.SGFAN(num_landmarks=NUM_LANDMARKS, width=width,
                      conv_impl="auto")
  variables = jax.jit(lambda v: m.init(jax.random.PRNGKey(3), v))(x[:1])
  # Non-trivial BN statistics and biases so that every copied tensor matters.
  leaves, treedef = jax.tree_util.tree_flatten(variables)
  keys = jax.random.split(jax.random.PRNGKey(4), len(leaves))
  leaves = [l + 0.05 * jnp.abs(jax.random.normal(k, l.shape))
            for l, k in zip(leaves, keys)]
  variables = jax.tree_util.tree_unflatten(treedef, leaves)
  tm = torch_sgfan.SGFAN(NUM_LANDMARKS, width)
  torch_sgfan.load_flax_variables(tm, jax.device_get(variables))
  xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
  to_nhwc = lambda t: t.detach().permute(0, 2, 3, 1).numpy()

  def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())

  for train in (False, True):
    tm.train(train)
    with torch.no_grad():
      th, ts = tm(xt)
    if train:
      (jh, js), _ = jax.jit(lambda v, x: m.apply(
          v, x, train=True, mutable=["batch_stats"]))(variables, x)
    else:
      jh, js = jax.jit(lambda v, x: m.apply(v, x))(variables, x)
    mode = "train" if train else "eval"
    report[f"rel_err_heatmaps_{mode}"] = rel(to_nhwc(th), np.asarray(jh))
    report[f"rel_err_scores_{mode}"] = rel(to_nhwc(ts), np.asarray(js))
    if train:
      jl = float(losses.sgfan_loss(jh, js, heat_gt, score_gt, 1.0)[
          "total"].sum() / 2)
      tl = float(torch_sgfan.sgfan_loss(
          th, ts, torch.from_numpy(heat_gt).permute(0, 3, 1, 2),
          torch.from_numpy(score_gt).permute(0, 3, 1, 2)))
      report["rel_err_loss_train"] = abs(jl - tl) / abs(tl)
  worst = max(v for k, v in report.items() if k.startswith("rel_err"))
  if worst > 1e-3:
    raise AssertionError(f"JAX and PyTorch outputs differ: {report}")
  if bf16:
    # Each framework's bfloat16 eval outputs against its own float32 ones
    # (same weights); reported, not asserted (tests/test_bf16.py holds the
    # JAX side to its tolerances).
    tm.eval()
    with torch.no_grad():
      th, ts = tm(xt)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
      bh, bs = tm(xt)
    jh, js = jax.jit(lambda v, x: m.apply(v, x))(variables, x)
    m16 = m.clone(dtype=jnp.bfloat16)
    kh, ks = jax.jit(lambda v, x: m16.apply(v, x))(variables, x)
    report["bf16_vs_f32_heatmaps_jax"] = rel(np.asarray(kh), np.asarray(jh))
    report["bf16_vs_f32_scores_jax"] = rel(np.asarray(ks), np.asarray(js))
    report["bf16_vs_f32_heatmaps_torch"] = rel(to_nhwc(bh.float()),
                                               to_nhwc(th))
    report["bf16_vs_f32_scores_torch"] = rel(to_nhwc(bs.float()),
                                             to_nhwc(ts))
  return report


# ---------------------------------------------------------------------- main

_machine = timing.machine


ALLOCATORS = timing.ALLOCATORS


def _run_worker(framework, width, conv_impl, reps, allocator, precision):
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", framework,
         "--widths", str(width), "--conv_impl", conv_impl,
         "--reps", json.dumps(reps), "--precision", precision]
  res = subprocess.run(cmd, check=True, capture_output=True, text=True,
                       env=timing.worker_env(allocator))
  return json.loads(res.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--widths", default="64,128,256")
  parser.add_argument("--rounds", type=int, default=1)
  parser.add_argument("--conv_impl", default="cpu")
  parser.add_argument("--check_width", type=int, default=64)
  parser.add_argument("--skip_check", action="store_true")
  parser.add_argument("--allocator", default="both",
                      choices=("both",) + ALLOCATORS,
                      help="glibc malloc setting of the workers (the same "
                      "for both frameworks): 'tuned' (what sgfan-jax's "
                      "commands use), 'default', or a table for each")
  parser.add_argument("--reps", default=json.dumps(
      {"warmup": 1, "train": 4, "fwd1": 15, "fwd10": 3}))
  parser.add_argument("--precision", default="float32",
                      choices=PRECISIONS + ("both",),
                      help="equal precision on both sides: float32, "
                      "bfloat16 (JAX model.dtype bfloat16 vs PyTorch CPU "
                      "autocast to bfloat16), or a table for each")
  parser.add_argument("--out", default="")
  parser.add_argument("--worker", default="")
  args = parser.parse_args()
  widths = [int(w) for w in args.widths.split(",")]
  reps = json.loads(args.reps)
  precisions = PRECISIONS if args.precision == "both" else (args.precision,)

  if args.worker:
    if args.worker == "jax":
      out = worker_jax(widths[0], args.conv_impl, reps, precisions[0])
    else:
      out = worker_torch(widths[0], reps, precisions[0])
    out["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(out))
    return

  machine = _machine()
  print(f"machine: {machine}", flush=True)
  check = {}
  if not args.skip_check:
    check = check_equivalence(args.check_width, widths,
                              bf16="bfloat16" in precisions)
    print(f"equivalence: {check}", flush=True)

  allocators = ALLOCATORS if args.allocator == "both" else (args.allocator,)
  runs = {}
  for r in range(args.rounds):
    for prec in precisions:
      for alloc in allocators:
        for width in widths:
          order = (("jax", "torch") if (r + widths.index(width)) % 2 == 0
                   else ("torch", "jax"))
          for fw in order:
            res = _run_worker(fw, width, args.conv_impl, reps, alloc, prec)
            runs.setdefault((prec, alloc, fw, width), []).append(res)
            print(f"round {r} {prec} allocator {alloc} width {width} {fw}: "
                  f"{res}", flush=True)
  tables = {(prec, alloc): _table(runs, (prec, alloc), widths)
            for prec in precisions for alloc in allocators}
  for (prec, alloc), table in tables.items():
    print(f"\nprecision: {prec}, allocator: {alloc}\n{table}")
  if args.out:
    _write_report(args, machine, runs, tables, check, reps, widths)


def _table(runs, setting, widths):
  """The markdown table of one (precision, allocator) setting (medians
  over rounds)."""
  def med(fw, width, key):
    return statistics.median(x[key] for x in runs[setting + (fw, width)])

  header = ("| width | params | train b10 img/s JAX | PyTorch | JAX/PT | "
            "fwd b1 ms JAX | PyTorch | PT/JAX | fwd b10 ms JAX | PyTorch | "
            "PT/JAX | peak RSS MB JAX | PyTorch |")
  lines = [header, "|" + " --- |" * 13]
  for width in widths:
    jt, pt = med("jax", width, "train_s"), med("torch", width, "train_s")
    j1, p1 = med("jax", width, "fwd1_s"), med("torch", width, "fwd1_s")
    j10, p10 = med("jax", width, "fwd10_s"), med("torch", width, "fwd10_s")
    jr = max(x["peak_rss_mb"] for x in runs[setting + ("jax", width)])
    pr = max(x["peak_rss_mb"] for x in runs[setting + ("torch", width)])
    lines.append(
        f"| {width} | {runs[setting + ('jax', width)][0]['params']:,} | "
        f"{BATCH / jt:.3f} | {BATCH / pt:.3f} | {pt / jt:.2f} | "
        f"{j1 * 1e3:.1f} | {p1 * 1e3:.1f} | {p1 / j1:.2f} | "
        f"{j10 * 1e3:.0f} | {p10 * 1e3:.0f} | {p10 / j10:.2f} | "
        f"{jr:.0f} | {pr:.0f} |")
  return "\n".join(lines)


_PRECISION_NOTES = {
    "float32": "float32 on both sides",
    "bfloat16": "JAX config.model.dtype='bfloat16' vs PyTorch "
                "torch.autocast('cpu', dtype=torch.bfloat16); Eq. 3 loss in "
                "float32 on both sides",
}

_ALLOCATOR_NOTES = {
    "tuned": "GLIBC_TUNABLES={tunables} for both frameworks (what "
             "sgfan-jax's commands set; sgfan_jax/host_allocator.py)",
    "default": "glibc's default malloc settings for both frameworks",
}


def _write_report(args, machine, runs, tables, check, reps, widths):
  """benchmarks/results/vs_pytorch.md: command, machine, tables, method."""
  import torch  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from sgfan_jax import host_allocator  # pylint: disable=g-import-not-at-top
  threads = next(v[0]["threads"] for k, v in runs.items() if k[2] == "torch")
  with open(args.out, "w") as f:
    f.write(timing.report_header(
        "SGFAN: JAX vs PyTorch on CPU", "benchmarks/vs_pytorch.py",
        sys.argv[1:], machine,
        f"jax {jax.__version__} (conv_impl={args.conv_impl}), torch "
        f"{torch.__version__} ({threads} threads); widths {widths}"))
    for (prec, alloc), table in tables.items():
      note = _ALLOCATOR_NOTES[alloc].format(tunables=host_allocator.TUNABLES)
      f.write(f"## Precision: {prec} ({_PRECISION_NOTES[prec]}); "
              f"allocator: {alloc} ({note})\n\n{table}\n\n")
    f.write("Ratios > 1 mean JAX is faster. Train step: batch 10, "
            "forward + Eq. 3 loss / B + backward + RMSProp (PyTorch's rule) "
            "+ BN statistics, fixed random targets, median of "
            f"{reps['train']} steps after {reps['warmup']} warm-up; forward: "
            f"eval mode, median of {reps['fwd1']} (b1) / {reps['fwd10']} "
            "(b10) calls. Each (framework, width, precision, allocator) ran "
            "in a fresh "
            "subprocess, alternating JAX/PyTorch, "
            f"{args.rounds} round(s) (median over rounds); peak RSS = "
            "ru_maxrss of that subprocess (max over rounds).\n\n")
    if check:
      f.write(f"Equivalence check: {json.dumps(check)}\n")


if __name__ == "__main__":
  main()
