"""Data parallelism over every device JAX sees, on one or many hosts.

The batch axis is sharded over a 1-D ``jax.sharding.Mesh`` named ``'data'``;
parameters, BatchNorm statistics and optimiser state are replicated. XLA
(GSPMD) inserts the gradient all-reduce, and the BatchNorm batch statistics
are computed over the global batch, so a step on D devices equals the step on
one device with the same global batch (tests/test_parallel.py).

Multi-host: start one process per host and call
``jax.distributed.initialize()`` first (``main.py --distributed``); every
process reads the same global batch order (same seed) and feeds its own rows
(``local_rows``), and ``shard_batch`` assembles the global array.
"""

from typing import Any, Dict

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

DATA_AXIS = "data"


def make_mesh() -> Mesh:
  """A 1-D mesh over all devices (all hosts)."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size"):
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f"{what}={batch_size} is not divisible by the {n} "
                     f"devices; set --config.{what} to a multiple of {n}")


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every leaf of ``tree`` on all devices."""
  return jax.device_put(tree, replicated(mesh))


def local_rows(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """This process's contiguous share of a global host batch."""
  count, index = jax.process_count(), jax.process_index()
  if count == 1:
    return batch
  size = next(iter(batch.values())).shape[0]
  if size % count:
    raise ValueError(f"global batch {size} not divisible by {count} hosts")
  per = size // count
  return {k: v[index * per:(index + 1) * per] for k, v in batch.items()}


def shard_batch(batch: Dict[str, np.ndarray], mesh: Mesh) -> Dict[str, Any]:
  """Global host batch -> global jax.Arrays sharded along the batch axis.

  Every process passes the same global batch; each contributes its rows.
  """
  sharding = batch_sharding(mesh)
  local = local_rows(batch)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def to_host(tree: Any) -> Any:
  """Device outputs -> numpy on every host (all-gathered when multi-host)."""
  if jax.process_count() > 1:
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.device_get(tree)
