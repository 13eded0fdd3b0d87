"""Host-side input pipeline: grain loaders over random-access TFDS sources.

The stored examples (docs/DESIGN.md "Stored examples") are read from a built
TFDS split through ``builder.as_data_source`` (array_record, no TensorFlow),
or from any random-access source: an object with ``len()`` and ``[i]``
returning a dict with the DESIGN.md features (a list of dicts works).

Batches are dicts of numpy arrays (DESIGN.md "Batches"); only the numeric
features in ``BATCH_FEATURES`` are batched. Text features (``file_name``,
``subset``) stay in the source: look them up with the eval batch ``index``.

Training order: epoch ``e`` visits the examples in a permutation drawn from
``(seed, e)`` (grain's index shuffle), cut into ``len(source) // batch_size``
full batches (the remainder of each epoch is dropped). Batch ``step`` is a
pure function of ``(seed, step)``, so ``train_batches(..., start_step=k)``
yields exactly what an uninterrupted run yields from step ``k`` on, with any
number of workers.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import os
import sys
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

from absl import flags
import grain.python as grain
import numpy as np

from tfds_builders import build as tfds_build

# Numeric per-example features batched by the loaders, with their dtypes.
BATCH_FEATURES = {
    "image": np.uint8,
    "landmarks": np.float32,
    "visible": np.bool_,
    "crop_to_image": np.float32,
    "landmarks_original": np.float32,
}
# Eval padding rows get this index.
PAD_INDEX = -1
# Largest seed grain's index shuffle accepts (seeds are uint32).
_MAX_SEED = 2**32 - 1

BUILD_HINT = ("build it with `python -m tfds_builders.build {name} "
              "--manual_dir DIR --data_dir {data_dir}`")


@dataclasses.dataclass(frozen=True)
class SplitMetadata:
  """What the rest of the code needs to know about an opened split."""
  dataset: str         # builder name, e.g. 'face300w'
  split: str           # e.g. 'train', 'test_common'
  crop_size: int       # S, side of the stored crops
  crop_context: float  # crop side / face box side
  layout: str          # landmark layout name (sgfan_jax.layouts)
  num_examples: int


def parse_split_spec(spec: str) -> Tuple[str, str]:
  """'face300w:test_common' -> ('face300w', 'test_common')."""
  name, sep, split = spec.partition(":")
  if not sep or not name or not split:
    raise ValueError(f"expected 'builder:split', e.g. 'face300w:test_common',"
                     f" got {spec!r}")
  return name, split


def _load_builder(name: str, data_dir: Optional[str]):
  """The prepared TFDS builder ``name``; clear error if it is not built."""
  try:
    return tfds_build.load_builder(name, data_dir)
  except ValueError as e:   # unknown builder name
    raise ValueError(f"cannot open dataset {name!r}: {e}") from e


def open_split(builder_name: str, split: str,
               data_dir: Optional[str] = None) -> Tuple[Any, SplitMetadata]:
  """Opens one split of a built TFDS dataset as a random-access source.

  Args:
    builder_name: 'face300w' or 'cofw' (builders in tfds_builders/).
    split: split name, e.g. 'train' or 'test_common'.
    data_dir: TFDS data dir; None = TFDS default.

  Returns:
    (source, metadata): ``source[i]`` is a dict of the DESIGN.md features
    (decoded numpy arrays), ``len(source)`` the number of examples.

  Raises:
    FileNotFoundError: the dataset is not built in ``data_dir`` (the message
      gives the build command).
    ValueError: unknown dataset, or no such split (lists the splits).
  """
  if data_dir is not None:
    data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
  builder = _load_builder(builder_name, data_dir)
  splits = builder.info.splits
  if split not in splits:
    raise ValueError(
        f"dataset {builder_name} in {builder.data_dir} has no split "
        f"{split!r}; it has {sorted(splits)}. Missing source folders skip "
        f"splits at build time; add them and re" +
        BUILD_HINT.format(name=builder_name, data_dir=data_dir or "DIR"))
  meta = dict(builder.info.metadata or {})
  for key in ("crop_size", "crop_context", "layout"):
    if key not in meta:
      raise ValueError(f"dataset {builder_name} metadata lacks {key!r} "
                       f"(has {sorted(meta)}); rebuild it")
  layout = tfds_build.split_layout(builder, split)   # per split for cofw
  source = builder.as_data_source(split=split)
  metadata = SplitMetadata(
      dataset=builder_name, split=split, crop_size=int(meta["crop_size"]),
      crop_context=float(meta["crop_context"]), layout=str(layout),
      num_examples=len(source))
  return source, metadata


class ConcatSource:
  """Random-access concatenation of data sources (picklable, for grain).

  ``source[i]`` is item ``i - offset_k`` of the k-th source holding
  position ``i``; ``len`` is the sum of the lengths.
  """

  def __init__(self, sources: Sequence[Any]):
    if not sources:
      raise ValueError("ConcatSource needs at least one source")
    self._sources = list(sources)
    self._ends = np.cumsum([len(s) for s in self._sources]).tolist()

  def __len__(self) -> int:
    return int(self._ends[-1])

  def __getitem__(self, index: int):
    index = int(index)
    if index < 0:
      index += len(self)
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} examples")
    k = bisect.bisect_right(self._ends, index)
    start = self._ends[k - 1] if k else 0
    return self._sources[k][index - start]


def open_training_source(config, data_dir: Optional[str] = None
                         ) -> Tuple[Any, SplitMetadata, Any]:
  """The training split plus ``config.data.extra_train_splits``.

  Returns:
    ``(source, metadata, primary)``: the concatenated source, metadata of
    the whole (``num_examples`` = all faces, ``split`` names every part),
    and the source of ``data.train_dataset:train_split`` alone (the shape
    dictionary is built from it).

  Raises:
    ValueError: an extra split whose layout or stored-crop geometry differs
      from the training split's (the message names both).
  """
  primary, meta = open_split(config.data.train_dataset,
                             config.data.train_split, data_dir)
  extras = tuple(config.data.get("extra_train_splits", ()) or ())
  if not extras:
    return primary, meta, primary
  sources, names = [primary], [f"{meta.dataset}:{meta.split}"]
  held_out = {config.data.val_split, *config.data.eval_splits} - {""}
  for spec in extras:
    if spec in names:
      raise ValueError(f"data.extra_train_splits: {spec} is already in the "
                       f"training data ({' + '.join(names)})")
    if spec in held_out:
      raise ValueError(f"data.extra_train_splits: {spec} is a validation or "
                       "evaluation split (data.val_split / data.eval_splits);"
                       " training on it would leak it")
    source, m = open_split(*parse_split_spec(spec), data_dir)
    for key in ("layout", "crop_size", "crop_context"):
      if getattr(m, key) != getattr(meta, key):
        raise ValueError(
            f"data.extra_train_splits: {spec} has {key} {getattr(m, key)!r}, "
            f"the training split {names[0]} has {getattr(meta, key)!r}")
    sources.append(source)
    names.append(spec)
  source = ConcatSource(sources)
  return source, dataclasses.replace(
      meta, split="+".join([meta.split] + list(extras)),
      num_examples=len(source)), primary


# --------------------------------------------------------------- per example


def _select_features(example: Dict[str, Any]) -> Dict[str, np.ndarray]:
  """Keeps the batched features of one example, as numpy with fixed dtypes."""
  missing = [k for k in BATCH_FEATURES if k not in example]
  if missing:
    raise KeyError(f"example lacks feature(s) {missing}; has "
                   f"{sorted(example)} (see docs/DESIGN.md 'Stored examples')")
  return {k: np.asarray(example[k], dtype) for k, dtype in
          BATCH_FEATURES.items()}


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full training batches per epoch (the partial last batch is dropped).

  The one definition of an epoch in steps: the loaders, the learning-rate
  schedule and the number of training steps (``optim``, ``train``) use it.
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if num_examples < batch_size:
    raise ValueError(f"the training split has {num_examples} examples, "
                     f"fewer than one batch of {batch_size}")
  return num_examples // batch_size


class _TrainExample:
  """Position in the infinite training stream -> example (picklable).

  Position ``p`` is row ``p % B`` of batch ``step = p // B``; that batch is
  batch ``step % steps_per_epoch`` of epoch ``step // steps_per_epoch``.
  """

  def __init__(self, source, batch_size: int, seed: int):
    self._source = source
    self._num = len(source)
    self._batch = batch_size
    self._steps = steps_per_epoch(self._num, batch_size)
    # order[e * n + k] = k-th example of epoch e (reshuffled every epoch).
    self._order = grain.MapDataset.range(self._num).shuffle(seed).repeat()

  def __call__(self, position: int) -> Dict[str, np.ndarray]:
    step, row = divmod(int(position), self._batch)
    epoch, batch_in_epoch = divmod(step, self._steps)
    index = self._order[epoch * self._num + batch_in_epoch * self._batch + row]
    return _select_features(self._source[int(index)])


class _EvalExample:
  """Position -> example with ``mask``/``index``; zeros past the end."""

  def __init__(self, source):
    self._source = source
    self._num = len(source)
    self._pad = {k: np.zeros_like(v) for k, v in
                 _select_features(source[0]).items()}

  def __call__(self, position: int) -> Dict[str, np.ndarray]:
    position = int(position)
    if position < self._num:
      features = _select_features(self._source[position])
      features["mask"] = np.bool_(True)
      features["index"] = np.int32(position)
    else:
      features = dict(self._pad)
      features["mask"] = np.bool_(False)
      features["index"] = np.int32(PAD_INDEX)
    return features


# ------------------------------------------------------------------ loaders


def _iterate(ds: grain.MapDataset, num_workers: int, prefetch: int,
             num_threads: int):
  """grain iterator over a batched MapDataset with threads and processes."""
  if num_workers < 0 or prefetch < 0 or num_threads < 0:
    raise ValueError(f"num_workers, prefetch, num_threads must be >= 0, got "
                     f"{num_workers}, {prefetch}, {num_threads}")
  it_ds = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=num_threads, prefetch_buffer_size=max(prefetch, 1)))
  if num_workers > 0:
    # grain's worker processes read absl flags; outside absl.app.run (tests,
    # notebooks, plain scripts) they are unparsed: use the defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=max(prefetch, 1)))
  return _closing(iter(it_ds))


def _closing(iterator):
  """Yields from a grain iterator; closing the generator stops its workers."""
  try:
    yield from iterator
  finally:
    iterator.close()


def train_batches(source: Sequence[Dict[str, Any]], *, batch_size: int,
                  seed: int, start_step: int = 0, num_workers: int = 0,
                  prefetch: int = 2, num_threads: int = 1
                  ) -> Iterator[Dict[str, np.ndarray]]:
  """Infinite shuffled training batches, resumable at any step.

  Args:
    source: random-access source of DESIGN.md examples.
    batch_size: B.
    seed: shuffle seed in [0, 2**32 - 1]; each epoch gets its own order.
    start_step: first step to yield (resume); batch ``k`` of the returned
      iterator is global step ``start_step + k``.
    num_workers: grain worker processes decoding in the background (0 = in
      this process, with ``num_threads`` threads).
    prefetch: batches buffered per worker (and per reading process).
    num_threads: reading threads per process.

  Returns:
    Iterator of dicts: ``image`` uint8 [B, S, S, 3], ``landmarks`` float32
    [B, N, 2], ``visible`` bool [B, N], ``crop_to_image`` float32 [B, 2, 3],
    ``landmarks_original`` float32 [B, N, 2]. It is a generator: call
    ``.close()`` when done to stop the workers (garbage collection does too).
  """
  if not 0 <= seed <= _MAX_SEED:
    raise ValueError(f"seed must be in [0, {_MAX_SEED}], got {seed}")
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}")
  element = _TrainExample(source, batch_size, seed)   # validates batch_size
  positions = grain.MapDataset.range(start_step * batch_size, sys.maxsize)
  ds = positions.map(element).batch(batch_size, drop_remainder=True)
  return _iterate(ds, num_workers, prefetch, num_threads)


def num_eval_batches(num_examples: int, batch_size: int) -> int:
  """Padded evaluation batches covering ``num_examples``."""
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  return math.ceil(num_examples / batch_size)


def eval_batches(source: Sequence[Dict[str, Any]], *, batch_size: int,
                 num_workers: int = 0, prefetch: int = 2, num_threads: int = 1
                 ) -> Iterator[Dict[str, np.ndarray]]:
  """One in-order pass in fixed-size batches; the last one padded.

  Args:
    source: random-access source of DESIGN.md examples (not empty).
    batch_size: B.
    num_workers: grain worker processes (0 = in this process).
    prefetch: batches buffered per worker / process.
    num_threads: reading threads per process.

  Returns:
    Iterator over ``ceil(len(source) / B)`` dicts with the ``train_batches``
    features plus ``mask`` bool [B] (False = padding, all-zero features) and
    ``index`` int32 [B] (position in the source, -1 for padding). Every
    example appears exactly once, in order.
  """
  if len(source) == 0:
    raise ValueError("cannot evaluate an empty source")
  total = num_eval_batches(len(source), batch_size) * batch_size
  ds = grain.MapDataset.range(total).map(_EvalExample(source)).batch(
      batch_size, drop_remainder=True)
  return _iterate(ds, num_workers, prefetch, num_threads)
