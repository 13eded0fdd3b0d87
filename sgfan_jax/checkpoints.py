"""Checkpoints: an orbax CheckpointManager in ``workdir/checkpoints``.

* Periodic saves every ``checkpoint.every_steps`` (and at the end, and when
  training is interrupted by SIGTERM/SIGINT).
* Kept: the latest ``checkpoint.max_to_keep`` checkpoints, plus the one with
  the best (lowest) validation NME, whichever step it is.
* Saves are atomic (orbax writes to a temporary folder and renames), so a
  kill mid-save leaves the previous checkpoints intact: a crash loses at most
  the steps since the last checkpoint.
"""

import os
from typing import Any, Optional

from absl import logging
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

VAL_METRIC = "val_nme"


class Checkpointer:
  """Thin wrapper over ``ocp.CheckpointManager`` for a TrainState."""

  def __init__(self, workdir: str, max_to_keep: int = 3,
               read_only: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    policy = pp.AnyPreservationPolicy([
        pp.LatestN(n=max_to_keep),
        # Sorted descending by NME: the last one, kept, is the lowest.
        pp.BestN(get_metric_fn=lambda m: m[VAL_METRIC], reverse=True, n=1,
                 keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        # best_fn makes orbax write the metrics; retention is the policy's.
        best_fn=lambda m: m[VAL_METRIC], best_mode="min",
        keep_checkpoints_without_metrics=True, create=not read_only,
        read_only=read_only, enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def save(self, step: int, state: Any,
           val_nme: Optional[float] = None) -> None:
    """Saves ``state`` at ``step`` (overwriting metrics-less duplicates)."""
    metrics = None if val_nme is None else {VAL_METRIC: float(val_nme)}
    if step in self._manager.all_steps():
      if metrics is None:
        return
      self._manager.delete(step)
    self._manager.save(step, args=ocp.args.StandardSave(state),
                       metrics=metrics, force=True)
    self._manager.wait_until_finished()

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def best_step(self) -> Optional[int]:
    """Step with the lowest saved validation NME (None if none has one)."""
    best, best_nme = None, float("inf")
    for step in self._manager.all_steps():
      m = self._manager.metrics(step)
      if m and VAL_METRIC in m and m[VAL_METRIC] < best_nme:
        best, best_nme = step, m[VAL_METRIC]
    return best

  def metrics(self, step: int):
    """The metrics saved with ``step`` (e.g. {'val_nme': ...}) or None."""
    return self._manager.metrics(step)

  def all_steps(self):
    return list(self._manager.all_steps())

  def restore(self, step: int, target: Any) -> Any:
    """Restores the state saved at ``step`` into the structure of ``target``."""
    logging.info("Restoring checkpoint %d from %s", step, self.directory)
    return self._manager.restore(step, args=ocp.args.StandardRestore(target))

  def restore_raw(self, step: int) -> Any:
    """The tree saved at ``step`` as nested dicts of arrays (no target).

    Used by inference to read parameters and batch statistics without
    building an optimiser.
    """
    logging.info("Restoring checkpoint %d from %s", step, self.directory)
    return self._manager.restore(step, args=ocp.args.StandardRestore())

  def close(self):
    self._manager.close()
