"""HMR losses: zero at the labels, per-sample skipping by the has_* flags, the rotation distance formula."""
import math

import pytest
import torch

from posedreamer_mm.body.rotations import axis_angle_to_matrix
from posedreamer_mm.registry import MODELS
from posedreamer_mm.models.losses import rotation_matrix_distance


def _labels(b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = dict(smplx_global_orient=torch.randn(b, 3, generator=g), smplx_body_pose=torch.randn(b, 63, generator=g) * .3,
             smplx_left_hand_pose=torch.randn(b, 45, generator=g) * .3,
             smplx_right_hand_pose=torch.randn(b, 45, generator=g) * .3,
             smplx_jaw_pose=torch.randn(b, 3, generator=g) * .1, smplx_expression=torch.randn(b, 10, generator=g),
             smplx_betas=torch.randn(b, 10, generator=g), smplx_transl=torch.randn(b, 3, generator=g) + 5,
             keypoints=torch.rand(b, 17, 2, generator=g) * 48, keypoints_visible=torch.ones(b, 17),
             joints_3d=torch.randn(b, 127, 3, generator=g), input_size=torch.tensor([[48.0, 64.0]]).repeat(b, 1))
    for k in ('global_orient', 'body_pose', 'hands', 'face', 'betas', 'transl'):
        t[f'has_smplx_{k}'] = torch.ones(b)
    t['has_joints_3d'] = torch.ones(b)
    return t


def _pred_from(t):
    b = t['smplx_betas'].shape[0]
    rot = lambda k, n: axis_angle_to_matrix(t[k].reshape(b, n, 3)).clone().requires_grad_(True)  # noqa: E731
    return dict(global_orient=rot('smplx_global_orient', 1), body_pose=rot('smplx_body_pose', 21),
                left_hand_pose=rot('smplx_left_hand_pose', 15), right_hand_pose=rot('smplx_right_hand_pose', 15),
                jaw_pose=rot('smplx_jaw_pose', 1), expression=t['smplx_expression'].clone().requires_grad_(True),
                betas=t['smplx_betas'].clone().requires_grad_(True), cam_t=t['smplx_transl'].clone(),
                keypoints_crop=t['keypoints'].clone().requires_grad_(True),
                joints_3d=(t['joints_3d'] + 0.3).requires_grad_(True))  # a global offset: root-aligned it vanishes


LOSSES = [dict(type='HMRKeypoint2DLoss'), dict(type='HMRJoint3DLoss'),
          dict(type='SMPLXParamLoss', part_weights=dict(global_orient=1, body_pose=1, hands=1, face=1, betas=1,
                                                        transl=1))]


@pytest.mark.parametrize('cfg', LOSSES, ids=lambda c: c['type'])
def test_zero_at_the_labels_positive_elsewhere(cfg):
    loss = MODELS.build(cfg)
    t = _labels()
    pred = _pred_from(t)
    assert loss(pred, t).item() == pytest.approx(0.0, abs=1e-6)
    t2 = _labels(seed=1)
    assert loss(pred, t2).item() > 1e-3


@pytest.mark.parametrize('cfg', LOSSES, ids=lambda c: c['type'])
def test_a_sample_without_the_label_is_skipped(cfg):
    loss = MODELS.build(cfg)
    t, other = _labels(), _labels(seed=5)
    pred = _pred_from(t)
    for k in ('has_smplx_global_orient', 'has_smplx_body_pose', 'has_smplx_hands', 'has_smplx_face',
              'has_smplx_betas', 'has_smplx_transl', 'has_joints_3d'):
        t[k][1] = 0
    t['keypoints_visible'][1] = 0
    reference = loss(pred, t)
    for k, v in other.items():  # garbage labels on sample 1 change nothing
        if not k.startswith('has_') and k not in ('keypoints_visible', 'input_size'):
            t[k][1] = v[1] * 10
    assert loss(pred, t).item() == pytest.approx(reference.item(), abs=1e-6)
    for k, v in t.items():  # even NaN placeholders in the missing labels stay out of the value
        if not k.startswith('has_') and k not in ('keypoints_visible', 'input_size'):
            v[1] = float('nan')
    assert loss(pred, t).item() == pytest.approx(reference.item(), abs=1e-6)
    t = {k: torch.nan_to_num(v) for k, v in t.items()}  # (collect_targets zeroes them before a backward)
    for k in t:  # no sample labelled: exactly 0, with a finite (zero) gradient
        if k.startswith('has_') or k == 'keypoints_visible':
            t[k].zero_()
    pred = _pred_from(_labels(seed=2))
    value = loss(pred, t)
    assert value.item() == 0.0
    value.backward()
    grads = [p.grad for p in pred.values() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() and g.abs().sum() == 0 for g in grads)


def test_rotation_distance_is_4_one_minus_cos():
    angles = torch.linspace(0, math.pi, 7)
    axis = torch.nn.functional.normalize(torch.tensor([0.3, -0.5, 0.8]), dim=0)
    r0 = axis_angle_to_matrix(torch.tensor([0.2, 0.1, -0.4])).double()
    rel = axis_angle_to_matrix((axis[None] * angles[:, None]).double())
    torch.testing.assert_close(rotation_matrix_distance(r0 @ rel, r0.expand(7, 3, 3)), 4 * (1 - torch.cos(angles)).double())


def test_betas_prior_and_weights():
    loss = MODELS.build(dict(type='BetasPriorLoss', loss_weight=0.5))
    betas = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    assert loss(dict(betas=betas), {}).item() == pytest.approx(0.5 * 6 / 4)
    with pytest.raises(ValueError, match='unknown SMPLXParamLoss part'):
        MODELS.build(dict(type='SMPLXParamLoss', part_weights=dict(pose=1.0)))
    # The 2D loss is in units of the crop's longer side: a 6.4 px shift on a 64 px crop is 0.1.
    t = _labels(1)
    pred = dict(keypoints_crop=t['keypoints'] + torch.tensor([6.4, 0.0]))
    assert MODELS.build(dict(type='HMRKeypoint2DLoss', loss_weight=2.0))(pred, t).item() == pytest.approx(0.2)
