"""Paper configuration for COFW-68: train on 300-W, test on COFW-68.

  python main.py --config configs/cofw.py --workdir ~/sgfan/cofw
  python main.py --config configs/cofw.py --workdir ~/sgfan/cofw \
      --config.eval_only=True

Expected (paper Sec. 4.4, COFW-68, inter-ocular NME): baseline 6.29% ->
5.78% with score-guided refinement; success rate (NME <= 10%) 94.67% ->
97.83%. Needs the face300w and cofw datasets built (docs/USAGE.md, "Datasets").
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.eval_splits = ("cofw:test68",)
  config.data.val_split = "face300w:val"
  config.eval.val_normalization = "inter_pupil"
  return config
