"""HMREstimator: losses and gradients, predictions consistent with SMPL-X and the full-image camera, checkpoint
initialisation from a ViTPose (mmpose) model, no body-model data in checkpoints, and it learns."""
import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate

from posedreamer_mm.body.camera import crop_points_2d, project_points
from posedreamer_mm.body.joint_maps import smplx_to_coco17
from posedreamer_mm.registry import MODELS
from posedreamer_mm.testing.vit import tiny_hmr_model, tiny_vit_backbone

from .conftest import synthetic_samples


@pytest.fixture(scope='module')
def samples(standin_body):
    return synthetic_samples(standin_body, 4)


def _build(standin_model_dir, **kwargs):
    torch.manual_seed(0)
    model = MODELS.build(tiny_hmr_model(standin_model_dir, **kwargs))
    model.init_weights()
    return model


@pytest.mark.parametrize('hands_face', [False, True])
def test_losses_are_finite_and_reach_every_parameter(standin_model_dir, samples, hands_face):
    model = _build(standin_model_dir, with_hands=hands_face, with_face=hands_face)
    data = model.data_preprocessor(pseudo_collate(samples), True)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_keypoints_2d', 'loss_joints_3d', 'loss_smplx_params', 'loss_betas_prior'}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values()), losses
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.head.dec_pose.weight.grad.abs().sum() > 0


def test_nan_placeholders_of_missing_labels_leave_losses_and_gradients_finite(standin_model_dir, samples):
    model = _build(standin_model_dir)
    bad = samples[1]['data_samples'].clone()
    gt = bad.gt_instances
    for key in ('smplx_global_orient', 'smplx_body_pose', 'smplx_betas', 'smplx_transl', 'joints_3d', 'keypoints'):
        gt[key] = np.full_like(gt[key], np.nan)
    for key in ('has_smplx_global_orient', 'has_smplx_body_pose', 'has_smplx_betas', 'has_smplx_transl',
                'has_joints_3d', 'keypoints_visible'):
        gt[key] = np.zeros_like(gt[key])
    data = model.data_preprocessor(pseudo_collate([samples[0], dict(inputs=samples[1]['inputs'], data_samples=bad)]),
                                   True)
    losses = model(**data, mode='loss')
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize('with_face', [False, True])
def test_predictions_are_smplx_bodies_seen_by_the_full_image_camera(standin_model_dir, standin_body, samples,
                                                                     with_face):
    """The axis-angle parameters, posed by the body model's own named arguments (jaw_pose, hands, expression),
    reproduce the predicted mesh: a face head's jaw drives SMPL-X's jaw joint, not an eye or a hand joint."""
    model = _build(standin_model_dir, with_hands=True, with_face=with_face)
    with torch.no_grad():
        model.head.dec_pose.bias.normal_(0, 0.2)  # a non-rest pose, so the checks see real rotations
        model.head.dec_shape.bias.normal_(0, 0.5)  # and a non-zero shape and expression
    out = model.test_step(pseudo_collate(samples))
    for sample in out:
        pred = sample.pred_instances
        shapes = {k: v.shape for k, v in pred.items()}
        assert shapes['vertices'] == (1, 10475, 3) and shapes['joints_3d'] == (1, 127, 3)
        assert shapes['smplx_body_pose'] == (1, 63) and shapes['smplx_left_hand_pose'] == (1, 45)
        assert shapes['keypoints'] == (1, 17, 2) and all(v.dtype == np.float32 for v in pred.values())
        assert np.abs(pred['smplx_jaw_pose']).max() > 0.05 if with_face else not pred['smplx_jaw_pose'].any()
        np.testing.assert_array_equal(pred['smplx_transl'], pred['cam_t'])
        # The axis-angle parameters reproduce the predicted mesh through the body model (the metric's route).
        params = {k[6:]: torch.as_tensor(pred[k]) for k in pred.keys() if k.startswith('smplx_')}
        body = standin_body(**params)
        np.testing.assert_allclose(body.vertices.numpy(), pred['vertices'], atol=1e-4)
        np.testing.assert_allclose(body.joints.numpy(), pred['joints_3d'], atol=1e-4)
        # Keypoints are the full-image projection of the joints; in the crop they are the crop of it.
        meta = sample.metainfo
        kp = project_points(smplx_to_coco17(torch.as_tensor(pred['joints_3d'][0])), meta['focal'], meta['princpt'])
        np.testing.assert_allclose(pred['keypoints'][0], kp.numpy(), rtol=1e-5, atol=1e-3)
    assert 0 < out[0].pred_instances['cam_t'][0, 2] < 100


def test_forward_body_crop_keypoints_follow_the_crop(standin_model_dir, samples):
    model = _build(standin_model_dir)
    data = model.data_preprocessor(pseudo_collate(samples))
    with torch.no_grad():
        pred = model.forward_body(data['inputs'], data['data_samples'])
    for i, s in enumerate(samples):
        m = s['data_samples'].metainfo
        box = np.r_[m['bbox_center'] - m['bbox_scale'] / 2, m['bbox_scale']]
        ref = crop_points_2d(pred['keypoints'][i].double(), box, m['input_size'])
        torch.testing.assert_close(pred['keypoints_crop'][i].double(), ref, atol=1e-3, rtol=1e-5)


def test_checkpoints_hold_no_body_model_and_vitpose_weights_initialise_the_backbone(standin_model_dir, tmp_path):
    model = _build(standin_model_dir)
    keys = model.state_dict().keys()
    assert not any(k.startswith('body_model') or 'shapedirs' in k or 'v_template' in k for k in keys)
    # A ViTPose model (mmpose TopdownPoseEstimator) saved by mmpose's Runner: {'state_dict': {'backbone.*': ...}}.
    vitpose = MODELS.build(dict(
        type='TopdownPoseEstimator', backbone=tiny_vit_backbone(),
        head=dict(type='HeatmapHead', in_channels=32, out_channels=17, deconv_out_channels=(32, 32),
                  deconv_kernel_sizes=(4, 4), loss=dict(type='KeypointMSELoss', use_target_weight=True))))
    ckpt = tmp_path / 'vitpose_tiny.pth'
    torch.save({'state_dict': vitpose.state_dict()}, ckpt)
    cfg = tiny_hmr_model(standin_model_dir)
    cfg['backbone']['init_cfg'] = dict(type='Pretrained', checkpoint=str(ckpt), prefix='backbone.')
    hmr = MODELS.build(cfg)
    hmr.init_weights()
    ours, theirs = hmr.backbone.state_dict(), vitpose.backbone.state_dict()
    assert set(ours) == set(theirs)
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], msg=k)


def test_bad_input_is_named(standin_model_dir, samples):
    model = _build(standin_model_dir)
    bad = [dict(inputs=s['inputs'], data_samples=s['data_samples'].clone()) for s in samples[:2]]
    bad[1]['data_samples'].set_metainfo(dict(focal=None))
    del bad[1]['data_samples'].focal
    with pytest.raises(ValueError, match="has no metainfo 'focal'"):
        model.train_step(pseudo_collate(bad), _NoOptim())
    mixed = [samples[0],
             dict(inputs=torch.zeros(3, 32, 24, dtype=torch.uint8), data_samples=samples[1]['data_samples'])]
    with pytest.raises(ValueError, match='different sizes'):
        model.data_preprocessor(pseudo_collate(mixed))


class _NoOptim:
    def optim_context(self, model):
        import contextlib
        return contextlib.nullcontext()


def test_it_overfits_a_batch(standin_model_dir, samples):
    model = _build(standin_model_dir)
    data = model.data_preprocessor(pseudo_collate(samples), True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = None
    for _ in range(40):
        loss = sum(model(**data, mode='loss').values())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first, (first, loss.item())
