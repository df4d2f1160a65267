"""CLIFF full-frame camera: CLIFF's published formula, its inverse, and the weak-perspective meaning."""
import numpy as np
import torch

from posedreamer_mm.body.camera import crop_points_2d, project_points
from posedreamer_mm.models.utils import (
    apply_affine,
    cliff_bbox_info,
    crop_cam_to_full_translation,
    full_translation_to_crop_cam,
)


def _batch(seed=0, b=5):
    g = torch.Generator().manual_seed(seed)
    cam = torch.cat([torch.rand(b, 1, generator=g) + 0.5, torch.randn(b, 2, generator=g) * 0.1], 1)
    center = torch.rand(b, 2, generator=g) * torch.tensor([640.0, 480.0])
    scale = torch.rand(b, 1, generator=g).repeat(1, 2) * 300 + 50
    scale[:, 0] *= 0.75
    return cam, center, scale


def test_equals_cliff_cam_crop2full_for_a_centred_camera():
    cam, center, scale = _batch()
    img_h, img_w, f = 480.0, 640.0, 700.0
    # CLIFF (github.com/huawei-noah/noah-research/CLIFF, cam_crop2full), b = max side.
    b = scale.amax(-1)
    bs = b * cam[:, 0] + 1e-9
    tz = 2 * f / bs
    ref = torch.stack([2 * (center[:, 0] - img_w / 2) / bs + cam[:, 1], 2 * (center[:, 1] - img_h / 2) / bs + cam[:, 2],
                       tz], -1)
    focal = torch.full((5, 2), f)
    princpt = torch.tensor([[img_w / 2, img_h / 2]]).repeat(5, 1)
    out = crop_cam_to_full_translation(cam, center, scale, focal, princpt)
    torch.testing.assert_close(out, ref)
    info = cliff_bbox_info(center, scale, focal, princpt)
    ref_info = torch.stack([(center[:, 0] - img_w / 2) / f * 2.8, (center[:, 1] - img_h / 2) / f * 2.8,
                            (b - 0.24 * f) / (0.06 * f)], -1)
    torch.testing.assert_close(info, ref_info)


def test_inverse_and_weak_perspective_meaning():
    cam, center, scale = _batch(1)
    focal = torch.tensor([[700.0, 720.0]]).repeat(5, 1)  # non-square pixels and an off-centre principal point
    princpt = torch.tensor([[300.0, 250.0]]).repeat(5, 1)
    transl = crop_cam_to_full_translation(cam, center, scale, focal, princpt)
    torch.testing.assert_close(full_translation_to_crop_cam(transl, center, scale, focal, princpt), cam)
    # The body origin projects, in crop units (side = 2), to s * (tx, ty) * (f_axis / fx) from the crop centre.
    uv = project_points(transl[:, None], focal, princpt)[:, 0]
    b = scale.amax(-1, keepdim=True)
    expected = cam[:, :1] * cam[:, 1:] * focal / focal[:, :1]
    torch.testing.assert_close((uv - center) / (b / 2), expected, atol=1e-4, rtol=1e-4)


def test_affine_matches_crop_points():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 500, (2, 17, 2))
    box = np.array([40.0, 30.0, 150.0, 200.0])
    w, h = 48, 64
    trans = torch.tensor([[[w / box[2], 0, -box[0] * w / box[2]], [0, h / box[3], -box[1] * h / box[3]]]] * 2)
    ref = crop_points_2d(pts, box, (w, h))
    torch.testing.assert_close(apply_affine(torch.as_tensor(pts), trans.double()), ref.double(), atol=1e-4, rtol=0)
