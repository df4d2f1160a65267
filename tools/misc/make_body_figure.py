"""Draws the SMPL-X stand-in in a few poses with its projected COCO-17 skeleton (docs/images/standin_poses.png).

A dependency-free preview: a painter's-algorithm rasteriser (depth-sorted, back-face-culled triangles filled
with ``cv2.fillPoly``, Lambert-shaded) — not the project's renderer. Works with the real SMPL-X files too:

    python tools/misc/make_body_figure.py [--model-path DIR] [--out docs/images/standin_poses.png]

Without ``--model-path`` it writes the stand-in to a temporary directory first.
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile

import cv2
import numpy as np
import torch

from posedreamer_mm.body import (
    COCO17_SKELETON,
    SMPLXBodyModel,
    canonical_body_pose,
    project_points,
    smplx_to_coco17,
    upright_global_orient,
    write_standin_smplx,
)

#: BGR colours: left limbs orange, right limbs blue, face/torso green (mmpose's COCO palette idea).
_LEFT, _RIGHT, _MID = (0, 128, 255), (255, 128, 0), (0, 200, 0)


def render_mesh(verts: np.ndarray, faces: np.ndarray, focal: float, size: tuple[int, int],
                color=(185, 200, 220), ssaa: int = 2) -> np.ndarray:
    """Painter's-algorithm render of camera-frame ``verts (V, 3)`` (OpenCV, metres) into a BGR ``size (W, H)``
    image, principal point at the centre, ``ssaa``x supersampled for smooth edges."""
    w, h = size
    f, c = focal * ssaa, np.array([w, h], float) * ssaa / 2
    uv = verts[:, :2] / verts[:, 2:] * f + c
    tri = verts[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    # Front faces (outward normal towards the eye at the origin) are Lambert-shaded; back faces, seen only
    # through the mouth and eye openings, are drawn dark, as a renderer without culling would show them.
    facing = np.einsum('ij,ij->i', normal, -tri.mean(1)) > 0
    light = np.array([-0.3, -0.4, -1.0]) / np.linalg.norm([-0.3, -0.4, -1.0])
    shade = np.where(facing, 0.25 + 0.75 * np.clip(normal @ light, 0, 1), 0.15)
    order = np.argsort(-tri[:, :, 2].mean(1))
    order = order[tri[order, :, 2].min(1) > 0.05]  # near plane: nothing behind or at the eye
    img = np.full((h * ssaa, w * ssaa, 3), 255, np.uint8)
    pts = np.round(uv[faces] * 16).astype(np.int32)  # 4 fractional bits for sub-pixel fills
    colors = (np.array(color, float) * shade[:, None]).astype(int).tolist()
    for i in order:
        cv2.fillPoly(img, [pts[i]], colors[i], cv2.LINE_8, shift=4)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def draw_coco17(img: np.ndarray, kpts: np.ndarray, radius: int = 3) -> np.ndarray:
    """Draws COCO-17 ``kpts (17, 2)`` pixels: limbs coloured by side, joints as dots."""
    def side(k: int):
        return _MID if k < 5 else (_LEFT if k % 2 == 1 else _RIGHT)

    for a, b in COCO17_SKELETON:
        col = side(a) if side(a) == side(b) else _MID
        cv2.line(img, tuple(np.round(kpts[a]).astype(int)), tuple(np.round(kpts[b]).astype(int)), col, 2,
                 cv2.LINE_AA)
    for k, p in enumerate(kpts):
        cv2.circle(img, tuple(np.round(p).astype(int)), radius, side(k), -1, cv2.LINE_AA)
    return img


def pose_panels() -> list[tuple[str, dict, float]]:
    """(title, SMPL-X parameters, yaw degrees) of the figure's poses."""
    walk = torch.zeros(21, 3)
    walk[1 - 1, 0], walk[2 - 1, 0] = -0.5, 0.35  # left hip forward, right hip back
    walk[4 - 1, 0], walk[5 - 1, 0] = 0.25, 0.6  # knees bend
    walk[17 - 1, 2] = -1.3  # right arm raised
    walk[18 - 1, 2], walk[16 - 1, 2] = -0.3, -1.1  # left arm down, elbow bent forward
    walk[18 - 1, 1] = -1.0
    walk[15 - 1, 1] = 0.3  # head turned to its left
    a_pose = canonical_body_pose('A')
    return [('T-pose', {}, 0.0), ('A-pose', dict(body_pose=a_pose), 0.0),
            ('walk, arm raised', dict(body_pose=walk.reshape(1, 63)), 0.0),
            ('A-pose, yaw 60', dict(body_pose=a_pose), 60.0)]


def render_figure(model: SMPLXBodyModel, panel: tuple[int, int] = (360, 640), focal: float = 700.0,
                  distance: float = 2.9) -> np.ndarray:
    """One row of full-body panels and one row of close-ups (face, left hand, feet)."""
    rest = model().joints[0, 0].detach()
    tiles = []
    for title, params, yaw in pose_panels():
        orient = upright_global_orient(np.deg2rad(yaw))[None]
        transl = torch.tensor([[0.0, 0.1, distance]]) - rest  # pelvis on the optical axis, body centred
        out = model(global_orient=orient, transl=transl, **params)
        verts, joints = out.vertices[0].detach().numpy(), out.joints[0].detach()
        img = render_mesh(verts, model.faces, focal, panel)
        c = torch.tensor([panel[0] / 2, panel[1] / 2])
        kp = project_points(smplx_to_coco17(joints)[None], torch.tensor([focal, focal]), c)[0].numpy()
        tiles.append(_title(draw_coco17(img, kp), title))
    row1 = np.concatenate(tiles, 1)
    closeups = []
    # (title, body pose, scene rotation (axis-angle, camera frame), joints to centre on, camera distance)
    for title, pose, rotvec, ids, dist in (
            ('face', 'A', (0.0, 0.0, 0.0), [15], 0.55), ('face 45', 'A', (0.0, 0.8, 0.0), [15], 0.55),
            ('left hand from above', 'T', (np.pi / 2, 0.0, 0.0), [20, 28], 0.4),
            ('feet', 'A', (0.45, 0.5, 0.0), [7, 8, 10, 11], 0.9)):
        out = model(global_orient=upright_global_orient(0.0)[None], body_pose=canonical_body_pose(pose))
        verts, joints = out.vertices[0].detach(), out.joints[0].detach()
        rot = torch.as_tensor(cv2.Rodrigues(np.array(rotvec))[0], dtype=torch.float32)
        mid = joints[ids].mean(0)
        v = (verts - mid) @ rot.T + torch.tensor([0.0, 0.0, dist])
        j = (joints - mid) @ rot.T + torch.tensor([0.0, 0.0, dist])
        size = (row1.shape[1] // 4, panel[1] // 2)
        img = render_mesh(v.numpy(), model.faces, focal * 0.5, size)
        c = torch.tensor([size[0] / 2, size[1] / 2])
        uv = project_points(j[None], torch.tensor([focal * 0.5] * 2), c)[0].numpy()
        for k in range(55, 76):  # the vertex-picked keypoints (face, feet, fingertips) as red dots
            if (joints[k] - mid).norm() > 0.3:  # another close-up's keypoints
                continue
            cv2.circle(img, tuple(np.round(uv[k]).astype(int)), 3, (0, 0, 230), -1, cv2.LINE_AA)
        closeups.append(_title(img, title + ' (red: vertex keypoints)'))
    row2 = np.concatenate(closeups, 1)
    return np.concatenate([row1, row2[:, :row1.shape[1]]], 0)


def _title(img: np.ndarray, text: str) -> np.ndarray:
    cv2.putText(img, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (40, 40, 40), 1, cv2.LINE_AA)
    cv2.rectangle(img, (0, 0), (img.shape[1] - 1, img.shape[0] - 1), (200, 200, 200), 1)
    return img


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model-path', help='SMPL-X directory or file (default: a freshly written stand-in)')
    parser.add_argument('--out', default='docs/images/standin_poses.png')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = SMPLXBodyModel(args.model_path or write_standin_smplx(tmp))
        with torch.no_grad():
            fig = render_figure(model)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), fig)
    print(f'wrote {out} ({fig.shape[1]}x{fig.shape[0]})')


if __name__ == '__main__':
    main()
