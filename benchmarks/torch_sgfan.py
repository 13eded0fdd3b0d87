"""PyTorch port of the SGFAN network, for benchmarks only (not a dependency).

Mirrors sgfan_jax/model.py layer for layer (NCHW):
stem 7x7/2 conv -> residual blocks 64 -> width/2 -> width/2 -> width -> two
branches (hourglass, 2 residual blocks, 2x nearest upsampling, a residual
block, BN-ReLU, 1x1 head). Residual blocks are pre-activation bottlenecks
with a 1x1 projection of the normalised input when the width changes.

``load_flax_variables`` copies a flax ``{'params', 'batch_stats'}`` tree into
the module so both frameworks can be compared on the same weights.
"""

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def _bn(channels):
  # flax: momentum 0.9 (new = 0.9 old + 0.1 batch), eps 1e-5.
  return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


class ResidualBlock(nn.Module):
  """Pre-activation bottleneck: [B, C_in, H, W] -> [B, features, H, W]."""

  def __init__(self, cin, features):
    super().__init__()
    mid = features // 2
    self.bn0 = _bn(cin)
    self.skip = nn.Conv2d(cin, features, 1) if cin != features else None
    self.conv0 = nn.Conv2d(cin, mid, 1)
    self.bn1 = _bn(mid)
    self.conv1 = nn.Conv2d(mid, mid, 3, padding=1)
    self.bn2 = _bn(mid)
    self.conv2 = nn.Conv2d(mid, features, 1)

  def forward(self, x):
    y = F.relu(self.bn0(x))
    skip = x if self.skip is None else self.skip(y)
    y = self.conv0(y)
    y = self.conv1(F.relu(self.bn1(y)))
    y = self.conv2(F.relu(self.bn2(y)))
    return skip + y


def _upsample2(x):
  return F.interpolate(x, scale_factor=2, mode="nearest")


class Hourglass(nn.Module):
  """Recursive hourglass of ``depth`` levels at constant width."""

  def __init__(self, depth, features):
    super().__init__()
    self.depth = depth
    self.up = ResidualBlock(features, features)
    self.down = ResidualBlock(features, features)
    if depth > 1:
      self.inner = Hourglass(depth - 1, features)
    else:
      self.bottom = ResidualBlock(features, features)
    self.up_low = ResidualBlock(features, features)

  def forward(self, x):
    up = self.up(x)
    low = self.down(F.max_pool2d(x, 2, 2))
    low = self.inner(low) if self.depth > 1 else self.bottom(low)
    low = self.up_low(low)
    return up + _upsample2(low)


class Branch(nn.Module):
  """[B, width, 64, 64] -> [B, N, 128, 128]."""

  def __init__(self, num_maps, width, depth, branch_channels):
    super().__init__()
    self.hourglass = Hourglass(depth, width)
    self.res0 = ResidualBlock(width, width)
    self.res1 = ResidualBlock(width, branch_channels)
    self.res2 = ResidualBlock(branch_channels, branch_channels)
    self.bn = _bn(branch_channels)
    self.head = nn.Conv2d(branch_channels, num_maps, 1)

  def forward(self, x):
    x = self.hourglass(x)
    x = self.res1(self.res0(x))
    x = self.res2(_upsample2(x))
    return self.head(F.relu(self.bn(x)))


class SGFAN(nn.Module):
  """images [B, 3, 128, 128] -> (heatmaps, scores) [B, N, 128, 128]."""

  def __init__(self, num_landmarks=68, width=256, hourglass_depth=4,
               branch_channels=128):
    super().__init__()
    half = max(width // 2, 1)
    self.stem = nn.Conv2d(3, 64, 7, stride=2, padding=3)
    self.res = nn.ModuleList([ResidualBlock(64, half),
                              ResidualBlock(half, half),
                              ResidualBlock(half, width)])
    args = (num_landmarks, width, hourglass_depth, branch_channels)
    self.heatmap_branch = Branch(*args)
    self.score_branch = Branch(*args)

  def forward(self, x):
    x = self.stem(x)
    for block in self.res:
      x = block(x)
    return self.heatmap_branch(x), self.score_branch(x)


def count_params(module) -> int:
  return sum(p.numel() for p in module.parameters())


def sgfan_loss(heat, score, heat_gt, score_gt, loss_lambda=1.0):
  """Eq. 3 divided by the batch size (config.loss_mean_over_batch)."""
  total = (0.5 * (heat - heat_gt).square().sum()
           + loss_lambda * 0.5 * (score - score_gt).square().sum())
  return total / heat.shape[0]


# ----------------------------------------------------------- weight copying

def _copy(dst, src):
  with torch.no_grad():
    t = torch.from_numpy(np.array(src, dtype=np.float32, copy=True))
    if dst.shape != t.shape:
      raise ValueError(f"shape mismatch {tuple(dst.shape)} vs {tuple(t.shape)}")
    dst.copy_(t)


def _load_conv(conv, p):
  _copy(conv.weight, np.transpose(np.asarray(p["kernel"]), (3, 2, 0, 1)))
  _copy(conv.bias, p["bias"])


def _load_bn(bn, p, s):
  _copy(bn.weight, p["scale"])
  _copy(bn.bias, p["bias"])
  _copy(bn.running_mean, s["mean"])
  _copy(bn.running_var, s["var"])


def _load_res(block, p, s):
  for i, bn in enumerate((block.bn0, block.bn1, block.bn2)):
    _load_bn(bn, p[f"BatchNorm_{i}"], s[f"BatchNorm_{i}"])
  for i, conv in enumerate((block.conv0, block.conv1, block.conv2)):
    _load_conv(conv, p[f"Conv_{i}"])
  if block.skip is not None:
    _load_conv(block.skip, p["skip"])


def _load_hourglass(hg, p, s):
  for name in ("up", "down", "up_low"):
    _load_res(getattr(hg, name), p[name], s[name])
  if hg.depth > 1:
    _load_hourglass(hg.inner, p["inner"], s["inner"])
  else:
    _load_res(hg.bottom, p["bottom"], s["bottom"])


def load_flax_variables(model: SGFAN, variables) -> None:
  """Copies flax SGFAN variables ({'params', 'batch_stats'}) into ``model``."""
  p, s = variables["params"], variables["batch_stats"]
  _load_conv(model.stem, p["stem"])
  for i, block in enumerate(model.res):
    _load_res(block, p[f"ResidualBlock_{i}"], s[f"ResidualBlock_{i}"])
  for name in ("heatmap_branch", "score_branch"):
    br, bp, bs = getattr(model, name), p[name], s[name]
    _load_hourglass(br.hourglass, bp["Hourglass_0"], bs["Hourglass_0"])
    for i, block in enumerate((br.res0, br.res1, br.res2)):
      _load_res(block, bp[f"ResidualBlock_{i}"], bs[f"ResidualBlock_{i}"])
    _load_bn(br.bn, bp["BatchNorm_0"], bs["BatchNorm_0"])
    _load_conv(br.head, bp["head"])
