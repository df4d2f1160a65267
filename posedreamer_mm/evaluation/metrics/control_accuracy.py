"""Control accuracy of a generator: how well its images follow their labels, by OKS (docs/scoring.md).

A thin :class:`mmengine.evaluator.BaseMetric` around
:func:`posedreamer_mm.evaluation.functional.oks.control_accuracy`, so DPO, control-model training and the offline
filter log the same numbers: ``mean_oks``, ``oks_error`` (``1 - mean_oks``, what DPO reduces), ``frac_kept``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mmengine.evaluator import BaseMetric

from posedreamer_mm.evaluation.functional.oks import control_accuracy
from posedreamer_mm.registry import METRICS


@METRICS.register_module()
class ControlAccuracyMetric(BaseMetric):
    """Mean OKS between generated images and their labels, OKS error and the fraction the filters keep.

    Each data sample is a per-sample results dict of the scoring stages (docs/conventions.md), or any mapping /
    ``BaseDataElement`` with:

    - ``oks`` or ``scores['oks']``: the sample's OKS (``ScorePose``/``FilterByOKS``; 0 when nobody matched);
    - ``kept`` (bool) or ``drop_reason`` (set when a filter dropped it); without either, a sample counts as kept
      when ``oks >= keep_thr``.

    Samples without an OKS are skipped and counted (``num_skipped``).

    Args:
        keep_thr: the OKS a sample needs to count as kept when it carries no filter verdict (reference: 0.85).
        collect_device: mmengine's.
        prefix: mmengine's (put before every key).
    """

    default_prefix = 'control'

    def __init__(self, keep_thr: float = 0.85, collect_device: str = 'cpu', prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.keep_thr = keep_thr

    @staticmethod
    def _get(sample, key: str):
        if hasattr(sample, 'get'):
            return sample.get(key)
        return getattr(sample, key, None)

    def process(self, data_batch, data_samples: Sequence) -> None:
        """Stores ``(oks, kept)`` per sample (``nan`` OKS marks a sample without one)."""
        for sample in data_samples:
            oks = self._get(sample, 'oks')
            if oks is None:
                scores = self._get(sample, 'scores') or {}
                oks = scores.get('oks')
            oks = float('nan') if oks is None else float(oks)
            kept = self._get(sample, 'kept')
            if kept is None:
                drop_reason = self._get(sample, 'drop_reason')
                kept = (not drop_reason) if drop_reason is not None else oks >= self.keep_thr
            self.results.append((oks, bool(kept)))

    def compute_metrics(self, results: list) -> dict[str, float]:
        oks = np.array([r[0] for r in results], np.float64)
        kept = np.array([r[1] for r in results], bool)
        valid = np.isfinite(oks)
        if not valid.any():
            raise ValueError(f'ControlAccuracyMetric: none of the {len(results)} samples carries an OKS '
                             "(expected 'oks' or scores['oks'] from ScorePose)")
        out = control_accuracy(oks[valid], kept[valid])
        out['num_skipped'] = float((~valid).sum())
        return out
