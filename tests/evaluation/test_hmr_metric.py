"""HMRMetric: GT meshes from GT parameters through its own body model, per-dataset keys, skip counting."""
import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData
from mmpose.structures import PoseDataSample

from posedreamer_mm.body.body_model import SMPLXBodyModel
from posedreamer_mm.evaluation.functional.mesh import in_image, smplx_errors_mm
from posedreamer_mm.registry import METRICS
from posedreamer_mm.testing.hmr_fixtures import fixture_bodies

NAMES = ('global_orient', 'body_pose', 'left_hand_pose', 'right_hand_pose', 'jaw_pose', 'betas', 'expression',
         'transl')


@pytest.fixture(scope='module')
def model(standin_model_dir):
    return SMPLXBodyModel(standin_model_dir)


@pytest.fixture(scope='module')
def hmr_paths(standin_model_dir, tmp_path_factory):
    from posedreamer_mm.testing.hmr_fixtures import write_hmr_fixtures
    return write_hmr_fixtures(tmp_path_factory.mktemp('hmr_data'), num=2, smplx_model_dir=standin_model_dir)


@pytest.fixture(scope='module')
def metric(standin_model_dir):
    return METRICS.build(dict(type='HMRMetric',
                              body_model=dict(type='SMPLXBodyModel', model_path=str(standin_model_dir))))


def _sample(params: dict, pred_verts: np.ndarray, name: str, has=1.0, **meta) -> dict:
    gt = InstanceData(**{f'smplx_{k}': torch.as_tensor(v)[None] for k, v in params.items()})
    for flag in ('global_orient', 'body_pose', 'hands', 'face', 'betas', 'transl'):
        gt.set_field(torch.tensor([has if flag == 'body_pose' else 1.0]), f'has_smplx_{flag}')
    ds = PoseDataSample(metainfo=dict(dataset_name=name, gender='neutral', id=name, **meta))
    ds.gt_instances = gt
    ds.pred_instances = InstanceData(vertices=pred_verts[None].astype(np.float32))
    return ds.to_dict()  # what mmengine's Evaluator hands to metrics


def _verts(model, params: dict) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: torch.as_tensor(v)[None] for k, v in params.items()}).vertices[0].numpy()


def test_metric_is_zero_for_the_gt_mesh_and_matches_functional(model, metric):
    bodies = fixture_bodies(3, seed=7)
    rows = [{k: bodies[k][i] for k in NAMES} for i in range(3)]
    metric.results.clear()
    exact = [_sample(p, _verts(model, p) + [0.3, 0.1, 2.0], 'ubody') for p in rows]  # camera offset only
    noisy_params = [dict(p, body_pose=p['body_pose'] + 0.2) for p in rows]
    # A camera that sees only the upper body: errors average over the ground-truth points inside the image.
    camera = dict(focal=np.array([600.0, 600.0]), princpt=np.array([100.0, 200.0]), img_shape_full=np.array([220, 200]))
    noisy = [_sample(p, _verts(model, q), 'coco', **camera) for p, q in zip(rows, noisy_params)]
    skipped = _sample(rows[0], _verts(model, rows[0]), 'coco', has=0.0)
    metric.process({}, exact + noisy + [skipped])
    out = metric.compute_metrics(metric.results)
    for key in ('pve', 'pa_pve', 'mpjpe', 'pa_mpjpe', 'pve_hand', 'pa_pve_hand', 'pve_face', 'pa_pve_face'):
        assert out[f'ubody/{key}_mm'] < 1e-3, key
    assert out['ubody/num_samples'] == 3 and out['coco/num_samples'] == 3 and out['coco/num_skipped'] == 1
    assert out['all/num_samples'] == 6
    gt = np.stack([_verts(model, p) for p in rows])
    pred = np.stack([_verts(model, q) for q in noisy_params])
    cams = tuple(np.repeat(v[None], 3, 0) for v in (camera['focal'], camera['princpt'], np.array([200.0, 220.0])))
    ref = smplx_errors_mm(pred, gt, metric.j_regressor, metric.hand_ids, metric.face_ids,
                          hand_joint_regressors=metric.hand_regressors, camera=cams)
    inside = in_image(gt, *cams).mean()
    assert 0.1 < inside < 0.9, inside
    for key, value in ref.items():
        np.testing.assert_allclose(out[f'coco/{key}_mm'], np.nanmean(value), rtol=1e-4, err_msg=key)
    full = smplx_errors_mm(pred, gt, metric.j_regressor)
    assert not np.isclose(out['coco/pve_mm'], full['pve'].mean(), rtol=1e-3)
    assert out['coco/pve_mm'] > 10
    np.testing.assert_allclose(out['all/pve_mm'], (out['coco/pve_mm'] + out['ubody/pve_mm']) / 2, rtol=1e-6)


def test_part_vertex_sets_cover_hands_and_face(metric):
    (left, right), face = metric.hand_ids, metric.face_ids
    assert len(left) == len(right) > 300 and len(face) > 500
    assert not set(left) & set(right) and not set(left) & set(face)


def test_wrong_vertex_count_is_an_error(model, metric):
    params = {k: v[0] for k, v in fixture_bodies(1).items()}
    with pytest.raises(ValueError, match='same body model'):
        metric.process({}, [_sample(params, np.zeros((100, 3)), 'x')])


def test_hand_and_face_errors_only_where_labelled(model, metric):
    params = {k: v[0] for k, v in fixture_bodies(1, seed=9).items()}
    flat = dict(params, left_hand_pose=0 * params['left_hand_pose'], right_hand_pose=0 * params['right_hand_pose'])
    sample = _sample(params, _verts(model, flat), 'mpii')
    sample['gt_instances']['has_smplx_hands'] = torch.zeros(1)
    sample['gt_instances']['has_smplx_face'] = torch.zeros(1)
    metric.results.clear()
    metric.process({}, [sample])
    out = metric.compute_metrics(metric.results)
    assert 'mpii/pve_mm' in out and not any('hand' in k or 'face' in k for k in out)
    # Without hand labels the ground-truth mesh has flat hands, like this prediction.
    assert out['mpii/pve_mm'] < 1e-3


def test_pipeline_model_and_metric_agree_on_the_contract(hmr_paths, standin_model_dir, metric):
    """Fixture data -> packing -> the tiny HMR model (one training step, then predict) -> this metric."""
    from mmengine.dataset import pseudo_collate

    from posedreamer_mm.registry import DATASETS, MODELS
    from posedreamer_mm.testing.hmr_fixtures import hmr_dataset_cfgs
    from posedreamer_mm.testing.vit import tiny_hmr_model
    pipeline = [dict(type='LoadHMRImage'), dict(type='HMRRandomFlip', prob=0.5), dict(type='HMRBBoxCenterScale'),
                dict(type='HMRRandomBBoxTransform'), dict(type='HMRTopdownAffine', input_size=(48, 64)),
                dict(type='PackHMRInputs')]
    cfgs = hmr_dataset_cfgs(hmr_paths, pipeline=pipeline)
    batch = pseudo_collate([DATASETS.build(cfgs[k])[i] for k in ('bedlam', 'ubody') for i in range(2)])
    torch.manual_seed(0)
    model = MODELS.build(dict(tiny_hmr_model(standin_model_dir), data_preprocessor=dict(type='HMRDataPreprocessor')))
    losses = model.train_step(batch, _optim(model))
    assert all(torch.isfinite(v).all() for v in losses.values())
    preds = model.val_step(batch)
    metric.results.clear()
    metric.process(batch, [p.to_dict() for p in preds])
    out = metric.compute_metrics(metric.results)
    assert out['bedlam/num_samples'] == 2 and out['ubody/num_samples'] == 2
    assert all(np.isfinite(v) for v in out.values()) and out['all/pve_mm'] > 0


def _optim(model):
    from mmengine.optim import OptimWrapper
    return OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3))


def _logged(fn):
    """Runs ``fn`` and returns (its result, the messages mmengine's current logger received)."""
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)
    try:
        return fn(), messages
    finally:
        logger.removeHandler(handler)


def test_a_non_finite_prediction_is_counted_named_and_left_out(model, metric):
    """One NaN vertex must not stop validation (it made the Procrustes SVD raise LinAlgError): the sample is counted
    under num_nonfinite, named in a warning, and the means are those of the finite samples alone."""
    bodies = fixture_bodies(3, seed=11)
    rows = [{k: bodies[k][i] for k in NAMES} for i in range(3)]
    noisy = [_verts(model, dict(p, body_pose=p['body_pose'] + 0.1 * (i + 1))) for i, p in enumerate(rows)]
    bad = noisy[1].copy()
    bad[5, 0] = np.nan
    samples = [_sample(rows[0], noisy[0], 'ubody'), _sample(rows[1], bad, 'ubody'), _sample(rows[2], noisy[2], 'ubody')]
    samples[1]['id'] = 'ubody_nan_1'
    metric.results.clear()
    out, messages = _logged(lambda: (metric.process({}, samples), metric.compute_metrics(metric.results))[1])
    assert out['ubody/num_nonfinite'] == 1 and out['ubody/num_samples'] == 2 and out['ubody/num_skipped'] == 0
    gt = np.stack([_verts(model, rows[i]) for i in (0, 2)])
    ref = smplx_errors_mm(np.stack([noisy[0], noisy[2]]), gt, metric.j_regressor, metric.hand_ids, metric.face_ids,
                          hand_joint_regressors=metric.hand_regressors)
    for key, value in ref.items():
        np.testing.assert_allclose(out[f'ubody/{key}_mm'], value.mean(), rtol=1e-4, atol=1e-4, err_msg=key)
    assert any('ubody_nan_1' in m and 'non-finite' in m for m in messages), messages


def test_a_sample_without_a_label_translation_counts_every_point(model, metric):
    """docs/hmr_data.md: only ground-truth points inside the image count, but a sample without a label translation
    (no camera-frame mesh) counts every point. The camera below sees the upper body only."""
    params = {k: v[0] for k, v in fixture_bodies(1, seed=13).items()}
    gt, pred = _verts(model, params), _verts(model, dict(params, body_pose=params['body_pose'] + 0.2))
    camera = dict(focal=np.array([600.0, 600.0]), princpt=np.array([100.0, 200.0]), img_shape_full=np.array([220, 200]))
    cams = tuple(v[None] for v in (camera['focal'], camera['princpt'], np.array([200.0, 220.0])))
    assert 0.1 < in_image(gt[None], *cams).mean() < 0.9
    full = smplx_errors_mm(pred[None], gt[None], metric.j_regressor)
    inside = smplx_errors_mm(pred[None], gt[None], metric.j_regressor, camera=cams)
    with_transl = _sample(params, pred, 'a', **camera)
    without = _sample(params, pred, 'b', **camera)
    without['gt_instances']['has_smplx_transl'] = torch.zeros(1)
    metric.results.clear()
    metric.process({}, [with_transl, without])
    out = metric.compute_metrics(metric.results)
    assert out['a/pve_mm'] == pytest.approx(inside['pve'][0], rel=1e-4)
    assert out['b/pve_mm'] == pytest.approx(full['pve'][0], rel=1e-4)
    assert abs(out['a/pve_mm'] - out['b/pve_mm']) > 1.0


def test_the_metric_uses_the_process_s_one_model_per_gender(standin_model_dir, metric):
    """The metric and the HMR transforms read the same per-process models (posedreamer_mm/body/gendered.py)."""
    from posedreamer_mm.body.gendered import shared_body_models
    cfg = dict(type='SMPLXBodyModel', model_path=str(standin_model_dir))
    assert metric._model('neutral') is shared_body_models(cfg).model('neutral')
    other = METRICS.build(dict(type='HMRMetric', body_model=cfg))
    assert other._model('neutral') is metric._model('neutral')  # not a second copy per metric
