"""The evaluation report, one module per concern (entry point: report.py).

* ``splits``: :class:`SplitResult` (per-face arrays of one split) and split
  names (:func:`split_kind`, :func:`safe_name`, :func:`primary_normalization`);
* ``summary``: aggregation: per-image NMEs and every number of a split;
* ``paper``: the published numbers the tables compare with;
* ``records``: machine-readable files: ``results.json``, ``predictions_*.npz``;
* ``tables``: ``results.md``, the markdown tables;
* ``plots``: CED and occlusion precision-recall plots, faces with landmarks.
"""
