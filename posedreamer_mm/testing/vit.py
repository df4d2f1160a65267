"""Tiny ViT and HMR model configs for tests, smoke runs and the learning benchmark (random weights)."""
from __future__ import annotations

import os


def tiny_vit_backbone(img_size: tuple[int, int] = (64, 48), embed_dims: int = 32, num_layers: int = 2,
                      patch_size: int = 16) -> dict:
    """An ``mmpretrain.VisionTransformer`` config of width 32, depth 2, with ViTPose's settings (16-pixel
    patches padded by 2, no class token, feature-map output), so it loads the same checkpoints a ViTPose does.

    Args:
        img_size: ``(H, W)`` of the input crops.
        embed_dims: Token width.
        num_layers: Transformer layers.
        patch_size: Patch side in pixels (ViTPose: 16; the patch padding stays 2).
    """
    return dict(type='mmpretrain.VisionTransformer',
                arch=dict(embed_dims=embed_dims, num_layers=num_layers, num_heads=2,
                          feedforward_channels=2 * embed_dims),
                img_size=img_size, patch_size=patch_size, qkv_bias=True, drop_path_rate=0.0, with_cls_token=False,
                out_type='featmap', patch_cfg=dict(padding=2))


def tiny_head(in_channels: int = 32, **kwargs) -> dict:
    """A :class:`~posedreamer_mm.models.SMPLXTransformerHead` config of width 32, one layer (``kwargs`` override)."""
    cfg = dict(type='SMPLXTransformerHead', in_channels=in_channels, embed_dims=32, num_layers=1, num_heads=2,
               feedforward_channels=64)
    cfg.update(kwargs)
    return cfg


def tiny_hmr_model(body_model_dir: str | os.PathLike, img_size: tuple[int, int] = (64, 48), patch_size: int = 16,
                   vit_dims: int = 32, vit_layers: int = 2, **head_kwargs) -> dict:
    """A complete tiny :class:`~posedreamer_mm.models.HMREstimator` config with every loss."""
    return dict(
        type='HMREstimator',
        backbone=tiny_vit_backbone(img_size, embed_dims=vit_dims, num_layers=vit_layers, patch_size=patch_size),
        head=tiny_head(in_channels=vit_dims, **head_kwargs),
        body_model=dict(type='SMPLXBodyModel', model_path=str(body_model_dir)),
        losses=dict(keypoints_2d=dict(type='HMRKeypoint2DLoss', loss_weight=1.0),
                    joints_3d=dict(type='HMRJoint3DLoss', loss_weight=1.0),
                    smplx_params=dict(type='SMPLXParamLoss', loss_weight=1.0),
                    betas_prior=dict(type='BetasPriorLoss', loss_weight=1e-3)))





def pack_hmr_sample(crop, bbox_xyxy, focal, princpt, img_shape_full, crop_box, params=None, joints_3d=None,
                    keypoints_full=None, keypoints_visible=None, sample_id: str = 'synthetic'):
    """Packs one person the way ``PackHMRInputs`` does (docs/conventions.md, "HMR data"), for model tests and the
    learning benchmark, which must not depend on the dataset pipeline.

    Args:
        crop: ``(H, W, 3)`` uint8 RGB crop of ``crop_box`` resized to the input size.
        bbox_xyxy: ``(4,)`` person box, full-image pixels.
        focal: ``(2,)`` full-image focal, pixels.
        princpt: ``(2,)`` full-image principal point, pixels.
        img_shape_full: ``(H, W)`` of the full image.
        crop_box: ``(4,)`` ``(x, y, w, h)`` of the crop region in full-image pixels (``body.camera.crop_image``).
        params: SMPL-X parameters (axis-angle, camera frame): any of ``global_orient``, ``body_pose``,
            ``left_hand_pose``, ``right_hand_pose``, ``jaw_pose``, ``betas``, ``expression``, ``transl``; the
            ``has_*`` flags are set for those given.
        joints_3d: ``(J, 3)`` camera-frame joints (m), or None.
        keypoints_full: ``(17, 2)`` COCO-17 keypoints in full-image pixels, or None.
        keypoints_visible: ``(17,)`` visibility (default all 1 when keypoints are given).
        sample_id: The sample's id.

    Returns:
        ``dict(inputs=(3, H, W) uint8 tensor, data_samples=PoseDataSample)``.
    """
    import numpy as np
    import torch
    from mmengine.structures import InstanceData
    from mmpose.structures import PoseDataSample

    from posedreamer_mm.body.camera import crop_points_2d

    h, w = crop.shape[:2]
    x, y, bw, bh = (float(v) for v in crop_box)
    trans = np.array([[w / bw, 0.0, -x * w / bw], [0.0, h / bh, -y * h / bh]], np.float32)
    params = dict(params or {})
    f32 = lambda a, shape: np.asarray(a, np.float32).reshape(shape)  # noqa: E731
    gt = InstanceData()
    gt.bboxes = f32(bbox_xyxy, (1, 4))
    dims = dict(global_orient=3, body_pose=63, left_hand_pose=45, right_hand_pose=45, jaw_pose=3, betas=10,
                expression=10, transl=3)
    for key, dim in dims.items():
        gt[f'smplx_{key}'] = f32(params[key], (1, dim)) if key in params else np.zeros((1, dim), np.float32)
    flags = dict(global_orient=('global_orient',), body_pose=('body_pose',),
                 hands=('left_hand_pose', 'right_hand_pose'), betas=('betas',), transl=('transl',))
    for flag, keys in flags.items():
        gt[f'has_smplx_{flag}'] = np.array([float(all(k in params for k in keys))], np.float32)
    if keypoints_full is not None:
        kp = crop_points_2d(np.asarray(keypoints_full, np.float64), [x, y, bw, bh], (w, h)).numpy()
        gt.keypoints = f32(kp, (1, -1, 2))
        vis = np.ones(kp.shape[0]) if keypoints_visible is None else keypoints_visible
        gt.keypoints_visible = f32(vis, (1, -1))
    else:
        gt.keypoints = np.zeros((1, 17, 2), np.float32)
        gt.keypoints_visible = np.zeros((1, 17), np.float32)
    if joints_3d is not None:
        gt.joints_3d = f32(joints_3d, (1, -1, 3))
        gt.has_joints_3d = np.ones(1, np.float32)
    sample = PoseDataSample(gt_instances=gt)
    sample.set_metainfo(dict(
        crop_trans=trans, focal=f32(focal, (2,)), princpt=f32(princpt, (2,)),
        img_shape_full=tuple(int(v) for v in img_shape_full), input_size=(w, h),
        bbox_center=np.array([x + bw / 2, y + bh / 2], np.float32), bbox_scale=np.array([bw, bh], np.float32),
        flip=False, id=sample_id, dataset_name='synthetic', gender='neutral'))
    inputs = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))
    return dict(inputs=inputs, data_samples=sample)

__all__ = ['tiny_vit_backbone', 'tiny_head', 'tiny_hmr_model', 'pack_hmr_sample']
