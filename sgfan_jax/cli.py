"""The ``sgfan-jax`` console script of the installed package.

  sgfan-jax predict photos/ --out preds/      # = python -m sgfan_jax.predict
  sgfan-jax demo --workdir workdir_demo       # = python -m sgfan_jax.demo
  sgfan-jax build-dictionary ...              # = python -m sgfan_jax.build_dictionary
  sgfan-jax export-model --workdir W --out M  # = python -m sgfan_jax.export_model

Training is ``python main.py --config configs/... --workdir DIR`` from a
clone (configs are Python files you edit).
"""

import sys
from typing import List, Optional

from sgfan_jax import host_allocator

COMMANDS = {
    "predict": "sgfan_jax.predict",
    "demo": "sgfan_jax.demo",
    "build-dictionary": "sgfan_jax.build_dictionary",
    "export-model": "sgfan_jax.export_model",
    "occlusion-copy": "sgfan_jax.occlusion_copy",
}


def main(argv: Optional[List[str]] = None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] not in COMMANDS:
    names = ", ".join(COMMANDS)
    print(f"usage: sgfan-jax COMMAND [flags] (COMMAND: {names}); "
          "'sgfan-jax COMMAND --help' lists its flags", file=sys.stderr)
    sys.exit(2)
  host_allocator.reexec_with_tuned_allocator()
  module = __import__(COMMANDS[argv[1]], fromlist=["cli"])
  module.cli([f"sgfan-jax {argv[1]}"] + argv[2:])
