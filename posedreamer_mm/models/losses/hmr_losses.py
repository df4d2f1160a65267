"""HMR losses. Each takes the estimator's prediction and the batched labels and skips, per sample, what is missing.

Every loss is called as ``loss(pred, target) -> scalar`` with

- ``pred`` (:meth:`~posedreamer_mm.models.HMREstimator.forward_body`): ``keypoints_crop (B, K, 2)`` the model's
  COCO-17 keypoints projected with the full-image camera and mapped into the crop (pixels), ``joints_3d (B, J, 3)``
  camera frame metres, per-part rotation matrices (``global_orient (B, 1, 3, 3)``, ``body_pose (B, 21, 3, 3)``,
  optionally ``left_hand_pose``/``right_hand_pose (B, 15, 3, 3)``, ``jaw_pose (B, 1, 3, 3)``), ``betas (B, 10)``,
  optionally ``expression``, ``cam_t (B, 3)`` metres;
- ``target`` (:func:`~posedreamer_mm.models.utils.collect_targets` plus the camera metainfo): labels stacked over
  the batch with their ``has_*`` flags ``(B,)``, ``keypoints_visible (B, K)`` and ``input_size (B, 2)``.

Masked means divide by the number of samples (or keypoints) that have the label, clamped at 1, so a batch
without any label of a kind contributes exactly 0 (with a gradient of 0) rather than NaN.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from posedreamer_mm.body.rotations import axis_angle_to_matrix
from posedreamer_mm.registry import MODELS


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the entries where ``mask`` (same shape, 0/1) is set; 0 when none is.

    Unset entries are selected away, not multiplied by 0, so a placeholder NaN in a missing label cannot leak.
    """
    keep = mask > 0
    return torch.where(keep, values, torch.zeros_like(values)).sum() / keep.sum().clamp(min=1).to(values.dtype)


def rotation_matrix_distance(pred: Tensor, gt: Tensor) -> Tensor:
    """Squared Frobenius distance ``||R_pred - R_gt||_F^2`` per rotation, ``(..., 3, 3)`` -> ``(...)``.

    Equals ``4 (1 - cos(theta))`` for the relative angle ``theta`` (0 at equality, 8 at a half turn), and unlike an
    axis-angle difference it has no wrap-around (HMR 2.0 and SPIN supervise rotation matrices the same way).
    """
    return (pred - gt).square().sum((-1, -2))


class WeightedLoss(nn.Module):
    """A loss whose only setting is ``loss_weight``, the multiplier of its value (mmpose losses' convention)."""

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight


@MODELS.register_module()
class HMRKeypoint2DLoss(WeightedLoss):
    """L1 between predicted and labelled 2D keypoints in the crop, in units of the crop's longer side.

    The prediction is the full-image projection mapped by the crop's affine, so this supervises the full-frame
    (CLIFF) camera. Keypoints with ``keypoints_visible == 0`` (unlabelled) are skipped.

    Args:
        loss_weight: Multiplier of the loss.
    """

    def forward(self, pred: dict[str, Tensor], target: dict[str, Tensor]) -> Tensor:
        side = target['input_size'].amax(-1)[:, None, None]
        err = ((pred['keypoints_crop'] - target['keypoints']) / side).abs().sum(-1)
        return self.loss_weight * masked_mean(err, target['keypoints_visible'] > 0)


@MODELS.register_module()
class HMRJoint3DLoss(nn.Module):
    """L1 between root-aligned predicted and labelled 3D joints (metres), for samples with ``has_joints_3d``.

    Args:
        joint_indices: SMPL-X joints compared (default: the 22 body joints, pelvis to wrists). The labels'
            ``joints_3d`` follow SMPL-X's joint order (docs/conventions.md).
        root_index: Joint subtracted from both before comparing (the pelvis).
        loss_weight: Multiplier of the loss.
    """

    def __init__(self, joint_indices: Sequence[int] | None = None, root_index: int = 0, loss_weight: float = 1.0):
        super().__init__()
        self.joint_indices = list(range(22)) if joint_indices is None else [int(i) for i in joint_indices]
        self.root_index = root_index
        self.loss_weight = loss_weight

    def forward(self, pred: dict[str, Tensor], target: dict[str, Tensor]) -> Tensor:
        if 'joints_3d' not in target:
            return pred['joints_3d'].sum() * 0.0
        gt = target['joints_3d']
        needed = max(self.joint_indices + [self.root_index]) + 1
        if gt.shape[1] < needed:
            raise ValueError(f'HMRJoint3DLoss compares SMPL-X joints up to index {needed - 1}, but the labels have '
                             f'{gt.shape[1]} joints')
        idx = self.joint_indices

        def rel(j: Tensor) -> Tensor:
            return j[:, idx] - j[:, self.root_index:self.root_index + 1]

        err = (rel(pred['joints_3d']) - rel(gt)).abs().sum(-1).mean(-1)
        return self.loss_weight * masked_mean(err, target['has_joints_3d'])


@MODELS.register_module()
class SMPLXParamLoss(nn.Module):
    """SMPL-X parameter loss: rotation-matrix distance for rotations, L2 for shape, L1 for the translation.

    Each part counts only for samples whose flag is set: ``global_orient`` (``has_smplx_global_orient``),
    ``body_pose`` (``has_smplx_body_pose``), ``hands`` (both hands, ``has_smplx_hands``; only when the head
    predicts hands), ``face`` (jaw rotation and expression, ``has_smplx_face``; only with a face head),
    ``betas`` (``has_smplx_betas``), ``transl`` (the predicted full-image camera translation against the label's
    camera-frame ``transl``, ``has_smplx_transl``).

    Args:
        part_weights: Weight per part; parts left out weigh 0.
        loss_weight: Multiplier of the weighted sum.
    """

    PARTS = ('global_orient', 'body_pose', 'hands', 'face', 'betas', 'transl')

    def __init__(self, part_weights: dict[str, float] | None = None, loss_weight: float = 1.0):
        super().__init__()
        part_weights = dict(global_orient=1.0, body_pose=1.0, hands=1.0, face=1.0, betas=1.0, transl=0.0) \
            if part_weights is None else dict(part_weights)
        unknown = set(part_weights) - set(self.PARTS)
        if unknown:
            raise ValueError(f'unknown SMPLXParamLoss part(s) {sorted(unknown)}; expected some of {self.PARTS}')
        self.part_weights = part_weights
        self.loss_weight = loss_weight

    @staticmethod
    def _rot(pred: Tensor, gt_aa: Tensor) -> Tensor:
        """Mean rotation distance per sample, ``pred (B, n, 3, 3)`` against axis-angle ``(B, 3n)``."""
        gt = axis_angle_to_matrix(gt_aa.reshape(gt_aa.shape[0], -1, 3))
        return rotation_matrix_distance(pred, gt).mean(-1)

    def forward(self, pred: dict[str, Tensor], target: dict[str, Tensor]) -> Tensor:
        terms = {}
        terms['global_orient'] = masked_mean(self._rot(pred['global_orient'], target['smplx_global_orient']),
                                             target['has_smplx_global_orient'])
        terms['body_pose'] = masked_mean(self._rot(pred['body_pose'], target['smplx_body_pose']),
                                         target['has_smplx_body_pose'])
        if 'left_hand_pose' in pred:
            hands = (self._rot(pred['left_hand_pose'], target['smplx_left_hand_pose'])
                     + self._rot(pred['right_hand_pose'], target['smplx_right_hand_pose'])) / 2
            terms['hands'] = masked_mean(hands, target['has_smplx_hands'])
        if 'jaw_pose' in pred:
            face = self._rot(pred['jaw_pose'], target['smplx_jaw_pose']) \
                + (pred['expression'] - target['smplx_expression'][:, :pred['expression'].shape[1]]).square().mean(-1)
            terms['face'] = masked_mean(face, target['has_smplx_face'])
        nb = pred['betas'].shape[1]
        terms['betas'] = masked_mean((pred['betas'] - target['smplx_betas'][:, :nb]).square().mean(-1),
                                     target['has_smplx_betas'])
        terms['transl'] = masked_mean((pred['cam_t'] - target['smplx_transl']).abs().sum(-1),
                                      target['has_smplx_transl'])
        total = sum(self.part_weights.get(k, 0.0) * v for k, v in terms.items())
        return self.loss_weight * total


@MODELS.register_module()
class BetasPriorLoss(WeightedLoss):
    """Shape prior ``mean(betas^2)`` over every sample (SMPL-X betas are unit-variance PCA coefficients), which
    keeps the shape plausible where no shape label exists (2D-only and pseudo-GT samples).

    Args:
        loss_weight: Multiplier of the loss.
    """

    def forward(self, pred: dict[str, Tensor], target: dict[str, Tensor]) -> Tensor:
        return self.loss_weight * pred['betas'].square().mean()


__all__ = ['HMRKeypoint2DLoss', 'HMRJoint3DLoss', 'SMPLXParamLoss', 'BetasPriorLoss', 'masked_mean',
           'rotation_matrix_distance']
