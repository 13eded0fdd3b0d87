"""Paper configuration on 300-W (Table 1).

Trains on 300-W train (AFW + HELEN train + LFPW train, 3,148 faces) for 80
epochs (batch 10, RMSProp 1e-4 -> 5e-5 after 20 epochs) and evaluates on
common (HELEN test + LFPW test), challenging (iBUG) and full.

  python main.py --config configs/face300w.py --workdir ~/sgfan/300w
  python main.py --config configs/face300w.py --workdir ~/sgfan/300w \
      --config.eval_only=True

Expected (paper Table 1, inter-pupil NME %): common 4.16, challenging 7.54,
full 4.78. Training needs a GPU (about 25k steps); build the dataset first
(docs/USAGE.md, "Datasets").
"""

from configs import default


def get_config():
  return default.get_config()
