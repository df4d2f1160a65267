"""Fixtures for the HMR model tests: a tiny model on the SMPL-X stand-in and synthetic packed samples."""
import numpy as np
import pytest
import torch

from posedreamer_mm.body.body_model import SMPLXBodyModel
from posedreamer_mm.body.camera import bbox_from_points, project_points, square_crop_box
from posedreamer_mm.body.joint_maps import smplx_to_coco17
from posedreamer_mm.testing.vit import pack_hmr_sample


@pytest.fixture(scope='session')
def standin_body(standin_model_dir):
    return SMPLXBodyModel(standin_model_dir)


def random_params(rng: np.random.Generator, hands: bool = True) -> dict:
    """A plausible random SMPL-X body standing ~4 m in front of the camera."""
    params = dict(global_orient=np.array([np.pi, 0, 0]) + rng.normal(0, 0.2, 3), body_pose=rng.normal(0, 0.2, 63),
                  betas=rng.normal(0, 0.5, 10), transl=np.array([rng.normal(0, 0.3), rng.normal(0, 0.2), 4.0]))
    if hands:
        params.update(left_hand_pose=rng.normal(0, 0.2, 45), right_hand_pose=rng.normal(0, 0.2, 45))
    return params


def synthetic_samples(body: SMPLXBodyModel, num: int, seed: int = 0, input_size=(48, 64), **kwargs) -> list[dict]:
    """Packed samples of random bodies in a 320x240 image (noise pixels; labels exact for the stand-in)."""
    rng = np.random.default_rng(seed)
    focal, princpt, img_hw = np.array([400.0, 400.0]), np.array([160.0, 120.0]), (240, 320)
    out = []
    for i in range(num):
        params = random_params(rng)
        with torch.no_grad():
            res = body(**{k: torch.as_tensor(v, dtype=torch.float32)[None] for k, v in params.items()})
        joints = res.joints[0].numpy()
        uv = project_points(res.vertices[0], focal, princpt)
        box = bbox_from_points(uv).numpy()
        crop_box = square_crop_box(box, margin=0.25).numpy()
        crop_box = np.array([crop_box[0] + crop_box[2] / 8, crop_box[1], crop_box[2] * 0.75, crop_box[3]])  # 3:4
        kp = project_points(smplx_to_coco17(res.joints[0]), focal, princpt).numpy()
        out.append(pack_hmr_sample(rng.integers(0, 255, (input_size[1], input_size[0], 3), np.uint8),
                                   [box[0], box[1], box[0] + box[2], box[1] + box[3]], focal, princpt, img_hw,
                                   crop_box, params=params, joints_3d=joints, keypoints_full=kp,
                                   sample_id=f's{i}', **kwargs))
    return out
