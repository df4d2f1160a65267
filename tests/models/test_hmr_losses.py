"""HMR losses: zero at the labels, per-sample skipping by the has_* flags, the rotation distance formula."""
import math

import pytest
import torch

from posedreamer_mm.body.rotations import axis_angle_to_matrix
from posedreamer_mm.models.losses import SMPLXParamLoss, masked_mean, rotation_matrix_distance
from posedreamer_mm.registry import MODELS


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
    torch.testing.assert_close(rotation_matrix_distance(r0 @ rel, r0.expand(7, 3, 3)),
                               4 * (1 - torch.cos(angles)).double())


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


def _random_pred_and_labels(seed: int, b: int = 4):
    """Unrelated random prediction and labels (rotations from random axis-angles), random flags."""
    g = torch.Generator().manual_seed(seed)
    t = _labels(b, seed)
    pred = _pred_from(_labels(b, seed + 1000))
    pred['joints_3d'] = torch.randn(b, 127, 3, generator=g)
    for k in [k for k in t if k.startswith('has_')]:
        t[k] = (torch.rand(b, generator=g) > 0.3).float()
    t['keypoints_visible'] = (torch.rand(b, 17, generator=g) > 0.3).float()
    return pred, t


ALL_LOSSES = LOSSES + [dict(type='BetasPriorLoss')]


@pytest.mark.parametrize('cfg', ALL_LOSSES, ids=lambda c: c['type'])
def test_every_loss_is_non_negative_on_random_inputs(cfg):
    loss = MODELS.build(cfg)
    values = [loss(*_random_pred_and_labels(seed)).item() for seed in range(20)]
    assert min(values) >= 0.0 and max(values) > 0.0, values


def _half_unlabelled(t: dict, pred: dict, flags: tuple[str, ...]):
    """Appends to the batch a copy of each sample with garbage labels and the given flags cleared."""
    junk = _labels(t['smplx_betas'].shape[0], seed=77)
    t2 = {k: torch.cat([v, junk[k] * 10 if not k.startswith('has_') and k not in ('input_size',) else v]) for k, v
          in t.items()}
    for f in flags:
        t2[f][len(t[f]):] = 0
    pred2 = {k: torch.cat([v.detach(), v.detach()]) for k, v in pred.items()}
    return pred2, t2


def test_keypoint_loss_is_the_mean_over_labelled_keypoints_by_hand():
    """Every labelled keypoint off by (3, 4) px in a 48 x 64 crop: L1 / longer side = 7 / 64, whatever number of
    unlabelled keypoints and samples ride along (dividing by all of them would give less)."""
    t = _labels(2)
    pred = _pred_from(t)
    pred['keypoints_crop'] = t['keypoints'] + torch.tensor([3.0, 4.0])
    t['keypoints_visible'][:, ::2] = 0  # half the keypoints unlabelled
    loss = MODELS.build(dict(type='HMRKeypoint2DLoss'))
    assert loss(pred, t).item() == pytest.approx(7 / 64)
    pred2, t2 = _half_unlabelled(t, pred, ('keypoints_visible',))
    t2['keypoints_visible'][2:] = 0
    assert loss(pred2, t2).item() == pytest.approx(7 / 64)


def test_joint_3d_loss_is_the_mean_over_labelled_samples_by_hand():
    """Joint 5 of every labelled sample 10 cm off, the root exact: the root-aligned L1 is 0.1 m over 22 joints."""
    t = _labels(2)
    pred = _pred_from(t)
    pred['joints_3d'] = t['joints_3d'].clone()
    pred['joints_3d'][:, 5, 0] += 0.1
    loss = MODELS.build(dict(type='HMRJoint3DLoss'))
    assert loss(pred, t).item() == pytest.approx(0.1 / 22)
    pred2, t2 = _half_unlabelled(t, pred, ('has_joints_3d',))
    assert loss(pred2, t2).item() == pytest.approx(0.1 / 22)
    # The root is subtracted from both: moving the predicted root moves every other joint's error.
    pred['joints_3d'][:, 0, 1] += 0.2
    assert loss(pred, t).item() == pytest.approx((0.1 + 21 * 0.2) / 22)


@pytest.mark.parametrize('part,expected', [
    ('global_orient', 4 * (1 - math.cos(0.5))),        # the root turned 0.5 rad: ||R1 - R2||^2 = 4 (1 - cos)
    ('body_pose', 4 * (1 - math.cos(0.5)) / 21),       # one of 21 joints turned 0.5 rad
    ('hands', 4 * (1 - math.cos(0.5)) / 15),           # one of 15 joints of each hand; the two hands averaged
    ('face', 4 * (1 - math.cos(0.5)) + 0.25),          # the jaw turned, every expression off by 0.5
    ('betas', 1.0),                                    # every beta off by 1: mean square 1
    ('transl', 0.6),                                   # (0.1, 0.2, -0.3) m: L1 0.6
])
def test_param_loss_parts_are_means_over_labelled_samples_by_hand(part, expected):
    t = _labels(2)
    pred = {k: v.detach() for k, v in _pred_from(t).items()}
    turn = axis_angle_to_matrix(torch.tensor([0.0, 0.5, 0.0]))
    if part == 'global_orient':
        pred['global_orient'] = turn @ pred['global_orient']
    elif part == 'body_pose':
        pred['body_pose'][:, 7] = turn @ pred['body_pose'][:, 7]
    elif part == 'hands':
        pred['left_hand_pose'][:, 3] = turn @ pred['left_hand_pose'][:, 3]
        pred['right_hand_pose'][:, 9] = turn.T @ pred['right_hand_pose'][:, 9]
    elif part == 'face':
        pred['jaw_pose'] = turn @ pred['jaw_pose']
        pred['expression'] = pred['expression'] + 0.5
    elif part == 'betas':
        pred['betas'] = pred['betas'] + 1.0
    else:
        pred['cam_t'] = pred['cam_t'] + torch.tensor([0.1, 0.2, -0.3])
    loss = MODELS.build(dict(type='SMPLXParamLoss', part_weights={part: 1.0}))
    assert loss(pred, t).item() == pytest.approx(expected, rel=1e-5)
    pred2, t2 = _half_unlabelled(t, pred, (f'has_smplx_{part}',))
    assert loss(pred2, t2).item() == pytest.approx(expected, rel=1e-5)
    # Another part's weight alone sees none of this change.
    other = 'betas' if part != 'betas' else 'transl'
    assert MODELS.build(dict(type='SMPLXParamLoss', part_weights={other: 1.0}))(pred, t).item() == pytest.approx(
        0.0, abs=1e-6)


def test_betas_prior_is_the_mean_square_by_hand():
    pred = dict(betas=torch.tensor([[1.0, -2.0], [0.0, 3.0]]))
    assert MODELS.build(dict(type='BetasPriorLoss', loss_weight=2.0))(pred, {}).item() == pytest.approx(
        2.0 * (1 + 4 + 0 + 9) / 4)


def test_a_single_labelled_entry_is_its_own_mean():
    assert masked_mean(torch.tensor([3.0, 100.0]), torch.tensor([1.0, 0.0])).item() == 3.0
    assert masked_mean(torch.tensor([3.0, 5.0]), torch.tensor([1.0, 1.0])).item() == 4.0


def test_joint_3d_loss_compares_the_configured_joints_and_needs_them_in_the_labels():
    t = _labels(2)
    pred = _pred_from(t)
    pred['joints_3d'] = t['joints_3d'].clone()
    pred['joints_3d'][:, 30, 2] += 0.4  # a hand joint: outside the default 22 body joints
    assert MODELS.build(dict(type='HMRJoint3DLoss'))(pred, t).item() == pytest.approx(0.0, abs=1e-6)
    assert MODELS.build(dict(type='HMRJoint3DLoss', joint_indices=[30, 31]))(pred, t).item() == pytest.approx(0.2)
    # Labels with exactly the joints needed are enough; one fewer is an error naming the count.
    short = dict(t, joints_3d=t['joints_3d'][:, :22])
    assert MODELS.build(dict(type='HMRJoint3DLoss'))(dict(pred, joints_3d=pred['joints_3d'][:, :22]), short) == 0
    with pytest.raises(ValueError, match='up to index 21, but the labels have 21 joints'):
        MODELS.build(dict(type='HMRJoint3DLoss'))(pred, dict(t, joints_3d=t['joints_3d'][:, :21]))
    # A batch without any 3D label (2D-only data) has no joints_3d key: exactly 0.
    no3d = {k: v for k, v in t.items() if k not in ('joints_3d', 'has_joints_3d')}
    assert MODELS.build(dict(type='HMRJoint3DLoss'))(pred, no3d).item() == 0.0


def test_param_loss_default_weights_are_the_documented_ones():
    """Documented default: every part weight 1 except the translation (0)."""
    t = _labels(2)
    other = _labels(2, seed=9)
    pred = {k: v.detach() for k, v in _pred_from(other).items()}
    parts = {p: MODELS.build(dict(type='SMPLXParamLoss', part_weights={p: 1.0}))(pred, t).item()
             for p in SMPLXParamLoss.PARTS}
    assert all(v > 0 for v in parts.values()), parts
    expected = sum(v for p, v in parts.items() if p != 'transl')
    assert MODELS.build(dict(type='SMPLXParamLoss'))(pred, t).item() == pytest.approx(expected, rel=1e-6)


def test_fewer_predicted_betas_are_compared_with_the_first_labels():
    t = _labels(2)
    pred = {k: v.detach() for k, v in _pred_from(t).items()}
    pred['betas'] = t['smplx_betas'][:, :8] + 1.0
    loss = MODELS.build(dict(type='SMPLXParamLoss', part_weights=dict(betas=1.0)))
    assert loss(pred, t).item() == pytest.approx(1.0)


def test_betas_prior_default_weight_is_one():
    assert MODELS.build(dict(type='BetasPriorLoss'))(dict(betas=torch.tensor([[2.0]])), {}).item() == 4.0
