r"""Candidate CPU conv kernels in float32 and bfloat16, on the network's shapes.

  .venv/bin/python benchmarks/conv_bf16.py [--widths 64,256] \
      [--kinds 1x1,kxk,strided,upsample2x] [--reps 5] \
      [--out benchmarks/results/conv_bf16.md]

For each width, the convolutions of SGFAN (traced from model.py with
``flax.linen.intercept_methods``: input shape, kernel, stride, padding,
output channels, and how many times each occurs in one forward pass), at
batch 10 (the train step: forward and forward + backward) and batch 1
(the prediction forward). Each candidate of its kind (conv.CPU_KERNELS):

* ``stock f32``: ``lax.conv_general_dilated`` in float32;
* ``stock bf16``: the same with bfloat16 operands, float32 result
  (``preferred_element_type``);
* ``im2col bf16`` / ``shifted bf16``: conv.conv_im2col_matmul /
  conv.conv_shifted on bfloat16 operands (float32 accumulation, custom
  VJPs);
* 1x1 convs: ``matmul f32`` / ``matmul bf16`` (conv.conv_matmul_1x1);
* the 2x2 phase conv of the fused upsampling block (conv.conv_upsampled2x,
  kind ``upsample2x``): each kernel above as its ``conv_fn``, plus
  ``im2col f32`` (today's float32 choice).

Timed under jit, median of ``--reps`` after one warm-up call; fwd+bwd is
``jax.vjp`` forward plus the input and kernel gradients (kernel only for
the stem, whose input needs none). GFLOP/s counts 2*MACs of the
convolution (3x for fwd+bwd, 2x for the stem); the phase conv counts its
own 16-tap work. The summary weights each shape by its count in the
network: the conv time of one forward / train step per candidate, and of
the best candidate per shape. Runs with the tuned allocator (re-executes
itself), like sgfan-jax's commands. Run it on a quiet machine.
"""

import argparse
import collections
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks import timing  # pylint: disable=g-import-not-at-top,wrong-import-position

TRAIN_BATCH = 10
NUM_LANDMARKS = 68

# Candidates per kind: (label, kernel name, compute dtype name).
CANDIDATES = {
    "1x1": (("matmul f32", "matmul", "float32"),
            ("matmul bf16", "matmul", "bfloat16")),
    "kxk": (("stock f32", "xla", "float32"), ("stock bf16", "xla", "bfloat16"),
            ("im2col bf16", "im2col", "bfloat16"),
            ("shifted bf16", "shifted", "bfloat16")),
    "upsample2x": (("stock f32", "xla", "float32"),
                   ("im2col f32", "im2col", "float32"),
                   ("stock bf16", "xla", "bfloat16"),
                   ("im2col bf16", "im2col", "bfloat16"),
                   ("shifted bf16", "shifted", "bfloat16")),
}
CANDIDATES["strided"] = CANDIDATES["kxk"]
LABEL_ORDER = ("stock f32", "stock bf16", "im2col f32", "im2col bf16",
               "shifted bf16", "matmul f32", "matmul bf16")


def network_convs(width: int, branch_channels=None, input_size: int = 128):
  """{(hwc, kernel, stride, pad, features, upsample2x): count} of SGFAN."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from sgfan_jax import conv as conv_lib  # pylint: disable=g-import-not-at-top
  from sgfan_jax import model as model_lib  # pylint: disable=g-import-not-at-top

  seen = collections.Counter()

  def record(next_fun, args, kwargs, context):
    mod = context.module
    if isinstance(mod, conv_lib.Conv) and context.method_name == "__call__":
      kh, kw = mod.kernel_size
      pad = (kh // 2, kw // 2) if mod.padding < 0 else (mod.padding,) * 2
      seen[(tuple(args[0].shape[1:]), (kh, kw), mod.strides, pad,
            mod.features, mod.upsample2x_input)] += 1
    return next_fun(*args, **kwargs)

  kwargs = {} if branch_channels is None else {
      "branch_channels": branch_channels}
  model = model_lib.SGFAN(num_landmarks=NUM_LANDMARKS, width=width, **kwargs)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(
        jax.random.PRNGKey(0), jnp.zeros((1, input_size, input_size, 3))))
  return dict(sorted(seen.items(), key=lambda kv: (-kv[0][0][0], kv[0])))


def kind_of(conv):
  from sgfan_jax import conv as conv_lib  # pylint: disable=g-import-not-at-top
  _, ksize, stride, pad, _, up = conv
  return conv_lib.conv_kind(ksize, stride, pad, up)


def conv_flops(conv, batch):
  """2*MACs of one forward of ``conv`` (the phase conv: its 16-tap work)."""
  (h, w, cin), (kh, kw), stride, pad, cout, up = conv
  if up:   # four 2x2 phase convs at (h+1) x (w+1), 4*cout outputs
    return 2.0 * batch * (h + 1) * (w + 1) * 4 * cin * 4 * cout
  ho = (h + 2 * pad[0] - kh) // stride + 1
  wo = (w + 2 * pad[1] - kw) // stride + 1
  return 2.0 * batch * ho * wo * kh * kw * cin * cout


def time_candidate(conv, batch, kernel_name, dtype_name, reps, backward):
  """Median seconds of the forward (or forward + backward) of one conv."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from sgfan_jax import conv as conv_lib  # pylint: disable=g-import-not-at-top

  (h, w, cin), (kh, kw), stride, pad, cout, up = conv
  dtype = jnp.dtype(dtype_name)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], (batch, h, w, cin), jnp.float32).astype(
      dtype)
  kernel = 0.05 * jax.random.normal(keys[1], (kh, kw, cin, cout))
  fn = conv_lib.kernel_fn(kernel_name)
  if kernel_name == "xla" and dtype == jnp.float32:
    fn = conv_lib.conv_xla
  if up:
    apply = lambda x, k: conv_lib.conv_upsampled2x(x, k, fn)
  else:
    apply = lambda x, k: fn(x, k, stride, pad)
  y_shape = jax.eval_shape(apply, x, kernel)
  dy = jax.random.normal(keys[2], y_shape.shape, jnp.float32).astype(
      y_shape.dtype)
  stem = stride > 1 and cin == 3
  if not backward:
    run = jax.jit(apply)
    args = (x, kernel)
  elif stem:     # the stem's input (the image) needs no gradient
    run = jax.jit(lambda x, k, dy: jax.vjp(lambda k: apply(x, k), k)[1](dy))
    args = (x, kernel, dy)
  else:
    run = jax.jit(lambda x, k, dy: jax.vjp(apply, x, k)[1](dy))
    args = (x, kernel, dy)
  return timing.median_time(lambda: jax.block_until_ready(run(*args)), 1,
                            reps)


def measure(width, kinds, reps, train_batch=TRAIN_BATCH,
            branch_channels=None):
  """Rows of one width: per conv shape, per mode, per candidate seconds."""
  rows = []
  for conv, count in network_convs(width, branch_channels).items():
    kind = kind_of(conv)
    if kind not in kinds:
      continue
    for mode, batch, backward in (("train fwd+bwd", train_batch, True),
                                  ("train fwd", train_batch, False),
                                  ("predict fwd b1", 1, False)):
      times = {}
      for label, name, dtype in CANDIDATES[kind]:
        times[label] = time_candidate(conv, batch, name, dtype, reps,
                                      backward)
      factor = (1.0 if not backward else
                2.0 if conv[2] > 1 and conv[0][2] == 3 else 3.0)
      rows.append({"width": width, "conv": conv, "count": count,
                   "kind": kind, "mode": mode,
                   "gflop": factor * conv_flops(conv, batch) / 1e9,
                   "times": times})
      print(f"width {width} {describe(conv)} x{count} {mode}: " + ", ".join(
          f"{k} {v * 1e3:.2f} ms" for k, v in times.items()), flush=True)
  return rows


def describe(conv):
  (h, w, cin), (kh, kw), stride, _, cout, up = conv
  s = f"{h}x{w}x{cin}->{cout} {kh}x{kw}"
  if stride > 1:
    s += f"/{stride}"
  if up:
    s += " up2x"
  return s


def tables(rows):
  """Markdown: one table per (width, mode), then the weighted summary."""
  out = []
  groups = collections.OrderedDict()
  for r in rows:
    groups.setdefault((r["width"], r["mode"]), []).append(r)
  for (width, mode), rs in groups.items():
    present = {k for r in rs for k in r["times"]}
    labels = [k for k in LABEL_ORDER if k in present]
    out.append(f"### width {width}, {mode}\n")
    out.append("| conv (HxWxC_in->C_out kernel) | kind | count | GFLOP | " +
               " | ".join(f"{k} ms (GFLOP/s)" for k in labels) +
               " | fastest |")
    out.append("|" + " --- |" * (len(labels) + 5))
    totals = collections.defaultdict(float)
    best_total = 0.0
    for r in rs:
      cells = []
      for k in labels:
        t = r["times"].get(k)
        cells.append("" if t is None else
                     f"{t * 1e3:.2f} ({r['gflop'] / t:.0f})")
      best = min(r["times"], key=r["times"].get)
      out.append(f"| {describe(r['conv'])} | {r['kind']} | {r['count']} | "
                 f"{r['gflop']:.3g} | " + " | ".join(cells) + f" | {best} |")
      for k, t in r["times"].items():
        totals[(r["kind"], k)] += r["count"] * t
      best_total += r["count"] * min(r["times"].values())
    out.append("")
    out.append(f"Network conv time of one {mode} by kind and candidate "
               "(each shape x its count):\n")
    kinds = sorted({k for k, _ in totals})
    out.append("| kind | " + " | ".join(f"{k} ms" for k in labels) + " |")
    out.append("|" + " --- |" * (len(labels) + 1))
    for kind in kinds:
      out.append(f"| {kind} | " + " | ".join(
          f"{totals[(kind, k)] * 1e3:.1f}" if (kind, k) in totals else ""
          for k in labels) + " |")
    out.append(f"\nBest candidate per shape, summed: {best_total * 1e3:.1f} "
               "ms.\n")
  return "\n".join(out)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--widths", default="64,256")
  parser.add_argument("--kinds", default="1x1,kxk,strided,upsample2x")
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--train_batch", type=int, default=TRAIN_BATCH)
  parser.add_argument("--branch_channels", type=int, default=None,
                      help="override config.model.branch_channels (smoke "
                      "tests only)")
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  if os.environ.get("GLIBC_TUNABLES") is None:
    os.execve(sys.executable, [sys.executable] + sys.argv,
              timing.worker_env("tuned"))
  import jax  # pylint: disable=g-import-not-at-top
  kinds = tuple(args.kinds.split(","))
  start = timing.machine()
  print(f"machine: {start}", flush=True)
  rows = []
  for w in (int(v) for v in args.widths.split(",")):
    rows += measure(w, kinds, args.reps, args.train_batch,
                    args.branch_channels)
  text = tables(rows)
  print(text)
  if args.out:
    head = timing.report_header(
        "Candidate CPU conv kernels, float32 and bfloat16, network shapes",
        "benchmarks/conv_bf16.py", sys.argv[1:], start,
        f"jax {jax.__version__}, tuned allocator; median of {args.reps} "
        f"after 1 warm-up; train batch {args.train_batch}")
    with open(args.out, "w") as f:
      f.write(head + text + "\n")


if __name__ == "__main__":
  main()
