"""ControlAccuracyMetric: the numbers of evaluation.functional.control_accuracy through mmengine's metric API."""
import numpy as np
import pytest
from mmengine.structures import BaseDataElement

from posedreamer_mm.evaluation.functional.oks import control_accuracy
from posedreamer_mm.registry import METRICS


def test_metric_matches_functional():
    metric = METRICS.build(dict(type='ControlAccuracyMetric', keep_thr=0.85))
    samples = [
        dict(scores=dict(oks=0.9)),                              # no verdict: kept by keep_thr
        dict(scores=dict(oks=0.85)),                             # tie: kept
        dict(scores=dict(oks=0.5)),                              # no verdict: not kept
        dict(scores=dict(oks=0.95), drop_reason='head_pose_mismatch'),   # dropped by another filter
        dict(oks=0.0, kept=False),
        BaseDataElement(oks=0.7, kept=True),                     # an explicit verdict wins
        dict(scores=dict(sharpness=3.0)),                        # no OKS: skipped, counted
    ]
    metric.process({}, samples[:4])
    metric.process({}, samples[4:])
    out = metric.evaluate(len(samples))
    ref = control_accuracy(np.array([0.9, 0.85, 0.5, 0.95, 0.0, 0.7]),
                           np.array([True, True, False, False, False, True]))
    for key, value in ref.items():
        assert out[f'control/{key}'] == pytest.approx(value)
    assert out['control/num_skipped'] == 1
    assert out['control/oks_error'] == pytest.approx(1 - np.mean([0.9, 0.85, 0.5, 0.95, 0.0, 0.7]))


def test_metric_without_any_oks_fails_clearly():
    metric = METRICS.build(dict(type='ControlAccuracyMetric'))
    metric.process({}, [dict(scores={})])
    with pytest.raises(ValueError, match='carries an OKS'):
        metric.evaluate(1)
