"""The HMR model: ViT backbone -> SMPL-X head -> SMPL-X body with a CLIFF full-frame camera.

Why an mmengine ``BaseModel`` and not mmpose's ``BasePoseEstimator``: the latter is built around keypoint
heads (``head.predict`` returning keypoints and scores, codecs, heatmap flip-testing, ``add_pred_to_datasample``
writing ``keypoints``/``keypoint_scores``, the dataset's flip indices in its metainfo). A mesh model shares none
of that; what it does share -- a registered backbone/head built from dicts, the ``loss``/``predict``/``tensor``
modes, a data preprocessor, ``init_cfg`` checkpoint loading -- is mmengine's ``BaseModel``. The data samples
stay mmpose ``PoseDataSample``s, so mmpose transforms, visualisers and the Runner work unchanged.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from mmengine.model import BaseModel
from mmengine.structures import InstanceData
from torch import Tensor, nn

from posedreamer_mm.body.camera import project_points
from posedreamer_mm.body.joint_maps import SMPLX_TO_COCO17
from posedreamer_mm.body.rotations import matrix_to_axis_angle
from posedreamer_mm.registry import BODY_MODELS, MODELS

from ..utils import (
    apply_affine,
    check_rotmat_support,
    cliff_bbox_info,
    collect_camera,
    collect_targets,
    crop_cam_to_full_translation,
    smplx_forward_rotmat,
)


@MODELS.register_module()
class HMREstimator(BaseModel):
    """Top-down human mesh recovery: one person per crop -> SMPL-X parameters, mesh and full-image camera.

    Args:
        backbone: Backbone config, e.g. ``dict(type='mmpretrain.VisionTransformer', arch='large',
            img_size=(256, 192), out_type='featmap', with_cls_token=False, ...)`` (ViTPose's settings, so ViTPose
            and MAE checkpoints load through its ``init_cfg``). Its last output ``(B, C, h, w)`` feeds the head.
        head: Head config (:class:`~posedreamer_mm.models.SMPLXTransformerHead`).
        body_model: Body model config, ``dict(type='SMPLXBodyModel', model_path=body_model_dir)``. It is kept
            out of the model's ``state_dict``: checkpoints never contain the licensed SMPL-X data.
        losses: ``{name: loss config}``; each is logged as ``loss_<name>`` (:mod:`posedreamer_mm.models.losses`).
        data_preprocessor: Data preprocessor config (default :class:`HMRDataPreprocessor`).
        init_cfg: mmengine init config.

    ``predict`` writes each data sample's ``pred_instances`` (numpy float32, one person): ``smplx_global_orient
    (1, 3)``, ``smplx_body_pose (1, 63)``, ``smplx_left_hand_pose``/``smplx_right_hand_pose (1, 45)`` (flat hands
    when the head predicts none), ``smplx_jaw_pose (1, 3)``, ``smplx_betas (1, 10)``, ``smplx_expression (1, 10)``,
    ``smplx_transl (1, 3)`` (= ``cam_t``), axis-angle in the camera frame; ``vertices (1, V, 3)`` and ``joints_3d
    (1, J, 3)`` camera frame metres; ``cam_t (1, 3)``; ``keypoints (1, 17, 2)`` COCO-17 in full-image pixels.

    With :attr:`record_sample_errors` set (by :class:`~posedreamer_mm.engine.hooks.difficulty_hook.DifficultyHook`),
    ``loss`` also keeps :attr:`sample_errors` of its batch (:meth:`per_sample_error`).
    """

    #: Keep :attr:`sample_errors` in ``loss`` (off unless a hook asks for it).
    record_sample_errors = False

    def __init__(self, backbone: dict, head: dict, body_model: dict, losses: dict[str, dict],
                 data_preprocessor: dict | None = None, init_cfg: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor or dict(type='HMRDataPreprocessor'),
                         init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.head = MODELS.build(head)
        self.losses = nn.ModuleDict({name: MODELS.build(cfg) for name, cfg in losses.items()})
        body = BODY_MODELS.build(body_model)
        check_rotmat_support(body)
        if body.num_betas < self.head.num_betas:
            raise ValueError(f'the head predicts {self.head.num_betas} betas but the body model has {body.num_betas}')
        # Not a registered submodule: it stays out of state_dict and optimiser, and follows the inputs' device.
        object.__setattr__(self, 'body_model', body.requires_grad_(False))

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, inputs: Tensor, data_samples: Sequence | None = None, mode: str = 'tensor'):
        """mmengine's three modes: ``'loss'`` -> dict of losses, ``'predict'`` -> data samples with
        ``pred_instances``, ``'tensor'`` -> the head's raw outputs (no camera metainfo needed)."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            feats = self.extract_feat(inputs)
            return self.head(feats, inputs.new_zeros(inputs.shape[0], 3))
        raise RuntimeError(f'invalid mode {mode!r}: only "loss", "predict" and "tensor" are supported')

    def extract_feat(self, inputs: Tensor) -> Tensor:
        """``(B, 3, H, W)`` normalised crops -> ``(B, C, h, w)`` the backbone's last feature map."""
        feats = self.backbone(inputs)
        return feats[-1] if isinstance(feats, (tuple, list)) else feats

    def _body(self, device: torch.device):
        if self.body_model.smplx.v_template.device != device:
            self.body_model.to(device)
        return self.body_model

    def forward_body(self, inputs: Tensor, data_samples: Sequence) -> dict[str, Tensor]:
        """Runs backbone, head and body model with the full-image camera of each sample.

        Returns:
            The head's outputs plus ``cam_t (B, 3)`` camera-frame translation (m), ``vertices (B, V, 3)`` and
            ``joints_3d (B, J, 3)`` camera frame (m), ``keypoints (B, 17, 2)`` COCO-17 projected with the
            full-image camera (pixels) and ``keypoints_crop (B, 17, 2)`` the same in crop pixels, and the
            camera metainfo tensors (:data:`~posedreamer_mm.models.utils.CAMERA_META`).
        """
        cam = collect_camera(data_samples, inputs.device)
        bbox_info = cliff_bbox_info(cam['bbox_center'], cam['bbox_scale'], cam['focal'], cam['princpt'])
        out = self.head(self.extract_feat(inputs), bbox_info)
        b = inputs.shape[0]
        eye = torch.eye(3, device=inputs.device, dtype=out['body_pose'].dtype)
        rotmats = eye.repeat(b, 55, 1, 1)
        rotmats[:, 0:1] = out['global_orient']
        rotmats[:, 1:22] = out['body_pose']
        if 'jaw_pose' in out:
            rotmats[:, 22:23] = out['jaw_pose']
        if 'left_hand_pose' in out:
            rotmats[:, 25:40] = out['left_hand_pose']
            rotmats[:, 40:55] = out['right_hand_pose']
        body = smplx_forward_rotmat(self._body(inputs.device), rotmats, out['betas'], out.get('expression'))
        cam_t = crop_cam_to_full_translation(out['pred_cam'], cam['bbox_center'], cam['bbox_scale'], cam['focal'],
                                             cam['princpt'])
        joints = body.joints + cam_t[:, None]
        keypoints = project_points(joints[:, SMPLX_TO_COCO17], cam['focal'], cam['princpt'])
        out.update(cam, cam_t=cam_t, vertices=body.vertices + cam_t[:, None], joints_3d=joints, keypoints=keypoints,
                   keypoints_crop=apply_affine(keypoints, cam['crop_trans']))
        return out

    # ------------------------------------------------------------------------------------------------ modes
    def loss(self, inputs: Tensor, data_samples: Sequence) -> dict[str, Tensor]:
        """Weighted losses ``loss_<name>`` (mmengine sums every ``loss*`` key)."""
        pred = self.forward_body(inputs, data_samples)
        target = collect_targets(data_samples, inputs.device)
        target['input_size'] = pred['input_size']
        if self.record_sample_errors:
            self.sample_errors = self.per_sample_error(pred, target, data_samples)
        return {f'loss_{name}': loss(pred, target) for name, loss in self.losses.items()}

    @staticmethod
    @torch.no_grad()
    def per_sample_error(pred: dict[str, Tensor], target: dict[str, Tensor], data_samples: Sequence) -> dict:
        """Each sample's error, keyed by where it came from (the difficulty the curriculum sampler reads).

        The error is the pelvis-aligned mean position error of the 22 SMPL-X body joints in mm (MPJPE), NaN for a
        sample without 3D joints.

        Returns:
            ``dataset_name`` (list of str) and ``sample_idx`` ``(B,)`` int64 (the index in that dataset, from each
            data sample's metainfo, -1 where absent), ``error_mm`` ``(B,)`` float64.
        """
        b = len(data_samples)
        error = torch.full((b,), float('nan'))
        if 'joints_3d' in target:
            def rel(j: Tensor) -> Tensor:
                return j[:, :22] - j[:, :1]
            err = (rel(pred['joints_3d']) - rel(target['joints_3d'])).norm(dim=-1).mean(-1).float().cpu() * 1000.0
            error = torch.where(target['has_joints_3d'].cpu() > 0, err, error)
        return dict(dataset_name=[str(s.metainfo.get('dataset_name')) for s in data_samples],
                    sample_idx=np.array([int(s.metainfo.get('sample_idx', -1)) for s in data_samples], np.int64),
                    error_mm=error.double().numpy())

    def predict(self, inputs: Tensor, data_samples: Sequence) -> list:
        """Adds ``pred_instances`` (see the class docstring) to each data sample and returns them."""
        pred = self.forward_body(inputs, data_samples)
        b = inputs.shape[0]

        def aa(name: str, joints: int) -> Tensor:
            if name not in pred:  # parts the head does not predict stay at rest (flat hands, closed jaw)
                return inputs.new_zeros(b, joints * 3)
            return matrix_to_axis_angle(pred[name]).reshape(b, -1)

        expression = pred.get('expression', inputs.new_zeros(b, 0))
        expression = torch.cat([expression, expression.new_zeros(b, 10 - expression.shape[1])], 1) \
            if expression.shape[1] < 10 else expression
        fields = dict(smplx_global_orient=aa('global_orient', 1), smplx_body_pose=aa('body_pose', 21),
                      smplx_left_hand_pose=aa('left_hand_pose', 15), smplx_right_hand_pose=aa('right_hand_pose', 15),
                      smplx_jaw_pose=aa('jaw_pose', 1), smplx_betas=pred['betas'], smplx_expression=expression,
                      smplx_transl=pred['cam_t'], cam_t=pred['cam_t'], vertices=pred['vertices'],
                      joints_3d=pred['joints_3d'], keypoints=pred['keypoints'])
        fields = {k: v.detach().float().cpu().numpy() for k, v in fields.items()}
        for i, sample in enumerate(data_samples):
            sample.pred_instances = InstanceData(**{k: v[i:i + 1].astype(np.float32) for k, v in fields.items()})
        return list(data_samples)


__all__ = ['HMREstimator']
