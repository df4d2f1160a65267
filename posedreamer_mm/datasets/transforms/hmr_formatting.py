"""Colour augmentation of HMR crops and packing into the model's inputs and data samples."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import InstanceData
from mmpose.structures import PoseDataSample

from posedreamer_mm.registry import TRANSFORMS

#: SMPL-X parameters packed into ``gt_instances`` as ``smplx_<name>`` (docs/conventions.md, "HMR data").
PACKED_SMPLX = ('global_orient', 'body_pose', 'left_hand_pose', 'right_hand_pose', 'jaw_pose', 'betas',
                'expression', 'transl')
#: ``has_smplx`` parts packed as ``has_smplx_<part>`` ``(1,)`` float.
PACKED_FLAGS = ('global_orient', 'body_pose', 'hands', 'face', 'betas', 'transl')
#: metainfo keys copied from the results when present.
#: (``sample_idx``, the index in the dataset the sample came from, keys the per-sample difficulty of
#: ``HardSampleSampler``.)
DEFAULT_META_KEYS = ('id', 'sample_idx', 'dataset_name', 'img_path', 'gender', 'flip', 'crop_trans', 'focal',
                     'princpt', 'img_shape_full', 'input_size', 'bbox_center', 'bbox_scale', 'bbox_rotation',
                     'img_shape')


@TRANSFORMS.register_module()
class HMRColorJitter(BaseTransform):
    """Photometric augmentation of the (cropped) RGB image: per-channel gain (HMR's "pn" noise), brightness and
    contrast; cheap enough for the crop (apply it after :class:`HMRTopdownAffine`).

    Args:
        channel_gain: (min, max) independent multiplier per channel (HMR: (0.6, 1.4)).
        brightness: Max additive shift as a fraction of 255.
        contrast: Max relative contrast change around the mean grey.
        prob: Probability of applying anything.

    Required Keys:
        - img ((H, W, 3) uint8)

    Modified Keys:
        - img
    """

    def __init__(self, channel_gain: Sequence[float] = (0.8, 1.2), brightness: float = 0.1, contrast: float = 0.2,
                 prob: float = 0.8):
        self.channel_gain, self.brightness, self.contrast, self.prob = tuple(channel_gain), brightness, contrast, prob

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        img = results['img'].astype(np.float32)
        gain = np.random.uniform(*self.channel_gain, 3).astype(np.float32)
        c = np.float32(1.0 + np.random.uniform(-self.contrast, self.contrast))
        b = np.float32(255.0 * np.random.uniform(-self.brightness, self.brightness))
        mean = img.mean()
        img = (img * gain - mean) * c + mean + b
        results['img'] = np.clip(img, 0, 255).astype(np.uint8)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(channel_gain={self.channel_gain}, brightness={self.brightness}, '
                f'contrast={self.contrast}, prob={self.prob})')


@TRANSFORMS.register_module()
class PackHMRInputs(BaseTransform):
    """Packs an HMR sample (docs/conventions.md, "HMR data"): ``inputs`` ``(3, H, W)`` uint8 RGB crop and a
    :class:`mmpose.structures.PoseDataSample` whose ``gt_instances`` hold one person as ``(1, ...)`` float32
    tensors: ``bboxes`` (1, 4) xyxy full image, ``keypoints`` (1, 17, 2) crop pixels, ``keypoints_visible``
    (1, 17), ``smplx_<param>`` (1, D) for :data:`PACKED_SMPLX`, ``has_smplx_<part>`` (1,) for
    :data:`PACKED_FLAGS`, and ``joints_3d`` (1, J, 3) + ``has_joints_3d`` (1,) when the sample has 3D joints.
    ``metainfo`` gets :data:`DEFAULT_META_KEYS` present in the results (``crop_trans`` (2, 3) full image ->
    crop, ``focal``/``princpt`` (2,) of the full image, ``img_shape_full`` (H, W), ``input_size`` (W, H),
    ``bbox_center``/``bbox_scale`` (2,), ``flip``, ``id``, ``dataset_name``, ``gender``).

    Args:
        meta_keys: metainfo keys to copy.

    Required Keys:
        - img, bbox, keypoints_coco17, smplx, has_smplx

    Added Keys:
        - inputs, data_samples
    """

    def __init__(self, meta_keys: Sequence[str] = DEFAULT_META_KEYS):
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        img = np.ascontiguousarray(results['img'].transpose(2, 0, 1))
        inputs = torch.from_numpy(img)
        gt = InstanceData()
        f32 = lambda v: torch.as_tensor(np.asarray(v, np.float32))[None]  # noqa: E731 (1, ...) float32
        kpts = np.asarray(results['keypoints_coco17'], np.float32)
        gt.bboxes = f32(results['bbox'])
        gt.keypoints = f32(kpts[:, :2])
        gt.keypoints_visible = f32(kpts[:, 2] > 0)
        for name in PACKED_SMPLX:
            gt.set_field(f32(results['smplx'][name]), f'smplx_{name}')
        has = results['has_smplx']
        for part in PACKED_FLAGS:
            gt.set_field(torch.tensor([float(has.get(part, False))]), f'has_smplx_{part}')
        if results.get('joints_3d') is not None:
            gt.joints_3d = f32(results['joints_3d'])
            gt.has_joints_3d = torch.ones(1)
        meta = {k: results[k] for k in self.meta_keys if k in results}
        meta['flip'] = bool(results.get('flip', False))
        sample = PoseDataSample(metainfo=meta)
        sample.gt_instances = gt
        return dict(inputs=inputs, data_samples=sample)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(meta_keys={self.meta_keys})'
