"""Writes docs/images/control_types.png: the SMPL-X stand-in in several poses (rows) as every control type.

Usage::

    .venv/bin/python tools/misc/make_control_figure.py [--model-dir DIR] [--out docs/images/control_types.png]

Without ``--model-dir`` the open stand-in (``posedreamer_mm.body.standin``) is generated in a temporary folder.
Columns: PNCC, OpenPose skeleton, depth, normal, shaded. An "L" marks the person's left wrist in the shaded
column: on a front-facing body it is on the image's right.
"""
from __future__ import annotations

import argparse
import tempfile

import cv2
import numpy as np

#: (row label, yaw in degrees about the camera's vertical axis (0 = facing the camera), body-pose edits).
#: Body-pose edits are axis-angle per SMPL-X body joint (1 l_hip, 2 r_hip, 4 l_knee, 5 r_knee, 16 l_shoulder,
#: 17 r_shoulder, 18 l_elbow, 19 r_elbow) in the model frame (x: body's left, y: up, z: forward), from T-pose.
POSES = (
    ('A-pose, front', 0.0, 'A'),
    ('walking, 3/4 view', 35.0, {1: (-0.5, 0, 0), 2: (0.35, 0, 0), 4: (0.3, 0, 0), 5: (0.8, 0, 0),
                                 16: (0.4, 0, -1.2), 17: (-0.4, 0, 1.2), 18: (0, -0.5, 0), 19: (0, 0.4, 0)}),
    ('left arm forward, side', -90.0, {16: (0, -1.3, 0.6), 17: (0, 0.3, 1.2), 18: (0, -0.6, 0),
                                       1: (-0.3, 0, 0.1), 4: (0.4, 0, 0), 2: (0.2, 0, -0.1)}),
    ('crouching, back', 160.0, {1: (-1.5, 0, 0.2), 2: (-1.5, 0, -0.2), 4: (2.0, 0, 0), 5: (2.0, 0, 0),
                                16: (0, -0.9, -0.9), 17: (0, 0.9, 0.9)}),
)
COLUMNS = ('PNCC', 'skeleton (OpenPose-18)', 'depth', 'normal', 'shaded')
LEFT_WRIST = 20  # SMPL-X joint index


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model-dir', default=None, help='directory with SMPLX_NEUTRAL.npz (default: the stand-in)')
    p.add_argument('--out', default='docs/images/control_types.png')
    p.add_argument('--size', type=int, default=256, help='side of each control image')
    return p.parse_args()


def _rodrigues(vec) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(vec, np.float64).reshape(3, 1))[0]


def setup(args):
    """Builds the body model and the posed bodies in the camera frame."""
    import torch

    from posedreamer_mm.body.body_model import SMPLXBodyModel, canonical_body_pose
    model_dir = args.model_dir
    if model_dir is None:
        from posedreamer_mm.body.standin import write_standin_smplx
        model_dir = tempfile.mkdtemp(prefix='standin_')
        write_standin_smplx(model_dir)
    model = SMPLXBodyModel(model_path=model_dir, gender='neutral', num_betas=10)
    body_pose, global_orient = [], []
    for _, yaw, edits in POSES:
        if edits == 'A':
            pose = canonical_body_pose(kind='A')[0].numpy().astype(np.float64)
        else:
            pose = np.zeros(63)
            for joint, aa in edits.items():
                pose[(joint - 1) * 3:joint * 3] = aa
        body_pose.append(pose)
        # Model frame (y up, facing +z) -> OpenCV camera frame facing the camera: 180 deg about x, then yaw.
        rot = _rodrigues([0, np.deg2rad(yaw), 0]) @ _rodrigues([np.pi, 0, 0])
        global_orient.append(cv2.Rodrigues(rot)[0].ravel())
    n = len(POSES)
    with torch.no_grad():
        out = model(betas=torch.zeros(n, 10), global_orient=torch.tensor(np.array(global_orient), dtype=torch.float32),
                    body_pose=torch.tensor(np.array(body_pose), dtype=torch.float32),
                    transl=torch.tensor([[0.0, 0.0, 4.0]] * n))
    return model, out.vertices.numpy(), out.joints.numpy(), np.asarray(model.faces)


def run(args, model, vertices, joints, faces) -> np.ndarray:
    """Renders every pose as every control type: (rows, cols, size, size, 3) uint8."""
    from posedreamer_mm.render import DepthRenderer, NormalRenderer, PNCCRenderer, ShadedRenderer, SkeletonRenderer
    kw = dict(size=args.size, margin=0.1)
    renderers = [PNCCRenderer(body_model=model, **kw), SkeletonRenderer(**kw), DepthRenderer(**kw),
                 NormalRenderer(**kw), ShadedRenderer(**kw)]
    cam = dict(focal=(1500.0, 1500.0), princpt=(960.0, 540.0), img_size=(1920, 1080))
    grid = []
    for v, j in zip(vertices, joints):
        row = []
        for r in renderers:
            res = r.render(v, faces, joints=j, **cam)
            img = res['image'].copy()
            if isinstance(r, ShadedRenderer):
                u, w = res['joints_2d'][LEFT_WRIST]
                cv2.putText(img, 'L', (int(round(u)) - 6, int(round(w)) + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                            (255, 40, 40), 2, cv2.LINE_AA)
            row.append(img)
        grid.append(row)
    return np.array(grid)


def save(args, grid: np.ndarray) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows, cols = grid.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    for i in range(rows):
        for k in range(cols):
            ax = axes[i, k]
            ax.imshow(grid[i, k])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(COLUMNS[k], fontsize=10)
            if k == 0:
                ax.set_ylabel(POSES[i][0], fontsize=9)
    fig.suptitle('posedreamer_mm control types (open SMPL-X stand-in, 256 px body crops)', fontsize=11)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f'wrote {args.out}')


def main():
    args = parse_args()
    model, vertices, joints, faces = setup(args)
    save(args, run(args, model, vertices, joints, faces))


if __name__ == '__main__':
    main()
