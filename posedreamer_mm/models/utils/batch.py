"""Batching the packed HMR data samples (docs/conventions.md, "HMR data") into tensors for the model.

Per-sample labels differ by source (pseudo-GT sets lack 3D joints, hands or translation), so every label is
stacked with zeros where a sample lacks it and its ``has_*`` flag says which samples count.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

#: SMPL-X parameter labels of ``gt_instances``: name -> values per sample.
SMPLX_PARAM_DIMS = dict(smplx_global_orient=3, smplx_body_pose=63, smplx_left_hand_pose=45,
                        smplx_right_hand_pose=45, smplx_jaw_pose=3, smplx_betas=10, smplx_expression=10,
                        smplx_transl=3)
#: Availability flags of ``gt_instances`` (``(1,)`` float each; a flag a sample lacks counts as 0).
#: ``has_smplx_face`` (jaw + expression) is optional: only face-head configs read it.
HAS_FLAGS = ('has_smplx_global_orient', 'has_smplx_body_pose', 'has_smplx_hands', 'has_smplx_face',
             'has_smplx_betas', 'has_smplx_transl', 'has_joints_3d')
#: The flag that says whether each label of a sample is real (``keypoints`` use ``keypoints_visible``).
LABEL_FLAGS = dict(smplx_global_orient='has_smplx_global_orient', smplx_body_pose='has_smplx_body_pose',
                   smplx_left_hand_pose='has_smplx_hands', smplx_right_hand_pose='has_smplx_hands',
                   smplx_jaw_pose='has_smplx_face', smplx_expression='has_smplx_face', smplx_betas='has_smplx_betas',
                   smplx_transl='has_smplx_transl', joints_3d='has_joints_3d')
#: Camera/crop entries of each data sample's metainfo the model reads, with their per-sample shapes.
CAMERA_META = dict(bbox_center=(2,), bbox_scale=(2,), focal=(2,), princpt=(2,), crop_trans=(2, 3),
                   input_size=(2,))


def _tensor(value, device, dtype=torch.float32) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(value), dtype=dtype, device=device)


def collect_camera(data_samples: Sequence, device: torch.device | str = 'cpu') -> dict[str, Tensor]:
    """``(B, ...)`` float32 tensors of the crop/camera metainfo (:data:`CAMERA_META`) of each data sample.

    Raises:
        ValueError: A sample lacks one of the entries (the packing transform must set them), naming the sample.
    """
    out = {}
    for key, shape in CAMERA_META.items():
        values = []
        for i, sample in enumerate(data_samples):
            if key not in sample.metainfo:
                raise ValueError(f'data sample {i} (id={sample.metainfo.get("id")!r}) has no metainfo {key!r}; the HMR '
                               f'model needs {sorted(CAMERA_META)} (docs/conventions.md, "HMR data")')
            values.append(_tensor(sample.metainfo[key], device).reshape(shape))
        out[key] = torch.stack(values)
    return out


def collect_targets(data_samples: Sequence, device: torch.device | str = 'cpu') -> dict[str, Tensor]:
    """Stacks one person's labels per sample from ``gt_instances`` into ``(B, ...)`` tensors.

    Returns:
        ``keypoints (B, K, 2)`` crop pixels and ``keypoints_visible (B, K)`` (zeros for a sample without them),
        every :data:`SMPLX_PARAM_DIMS` key ``(B, D)``, ``joints_3d (B, J, 3)`` when any sample has them, and every
        :data:`HAS_FLAGS` flag ``(B,)`` (0 where the sample lacks the flag or the label).
    """
    b = len(data_samples)
    gts = [s.gt_instances for s in data_samples]
    out: dict[str, Tensor] = {}

    def first_row(gt, key):
        return _tensor(gt.get(key), device)[0] if key in gt else None

    kpts = [first_row(g, 'keypoints') for g in gts]
    num_k = next((k.shape[0] for k in kpts if k is not None), 17)
    out['keypoints'] = torch.stack([k[:, :2] if k is not None else torch.zeros(num_k, 2, device=device)
                                    for k in kpts])
    vis = [first_row(g, 'keypoints_visible') for g in gts]
    out['keypoints_visible'] = torch.stack([v.reshape(num_k) if v is not None else torch.zeros(num_k, device=device)
                                            for v in vis])
    for key, dim in SMPLX_PARAM_DIMS.items():
        rows = [first_row(g, key) for g in gts]
        out[key] = torch.stack([r.reshape(dim) if r is not None else torch.zeros(dim, device=device) for r in rows])
    for key in HAS_FLAGS:
        out[key] = torch.stack([first_row(g, key).reshape(()) if key in g else torch.zeros((), device=device)
                                for g in gts])
    joints = [first_row(g, 'joints_3d') if 'joints_3d' in g else None for g in gts]
    if any(j is not None for j in joints):
        num_j = max(j.shape[0] for j in joints if j is not None)
        stacked = torch.zeros(b, num_j, 3, device=device)
        for i, j in enumerate(joints):
            if j is None or j.shape[0] != num_j:
                out['has_joints_3d'][i] = 0
            else:
                stacked[i] = j
        out['joints_3d'] = stacked
    else:
        out['has_joints_3d'] = torch.zeros(b, device=device)
    # Placeholders of missing labels must be finite: a masked loss multiplies their gradient by 0, and 0 * NaN
    # is NaN. A flagged label that is not finite stays as it is (a bad label should show up, not vanish).
    for key, flag in LABEL_FLAGS.items():
        if key in out:
            unused = (out[flag] <= 0).reshape(-1, *[1] * (out[key].dim() - 1))
            out[key] = torch.where(unused & ~torch.isfinite(out[key]), torch.zeros_like(out[key]), out[key])
    unused = out['keypoints_visible'][..., None] <= 0
    out['keypoints'] = torch.where(unused & ~torch.isfinite(out['keypoints']), torch.zeros_like(out['keypoints']),
                                   out['keypoints'])
    return out


__all__ = ['collect_camera', 'collect_targets', 'SMPLX_PARAM_DIMS', 'HAS_FLAGS', 'LABEL_FLAGS', 'CAMERA_META']
