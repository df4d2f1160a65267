"""Writers of tiny AMASS / BEDLAM / PoseDreamer label files in a test's ``tmp_path`` (nothing binary is committed).

:func:`reference_bodies` is one short "sequence" of bodies in the camera frame; the writers store the same
bodies in each format's own convention (AMASS: z-up world root, no camera; BEDLAM: ``pose_cam`` with
``trans_cam + cam_ext`` translation; PoseDreamer: one file per sample), so every source must parse them into
identical records. The conversions here are written independently of the sources on purpose.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import pickle

import numpy as np
from scipy.spatial.transform import Rotation

FOCAL = 890.0
IMG_SIZE = (1024, 1024)  # (W, H)
DISTANCE = 3.0
#: Must equal posedreamer_mm.body.sources.SMPLX_NEUTRAL_PELVIS_REST (the default camera placement).
PELVIS_REST = np.array([0.0031, -0.3512, 0.0121])
PARAM_FIELDS = ('betas', 'expression', 'global_orient', 'body_pose', 'left_hand_pose', 'right_hand_pose',
                'jaw_pose', 'leye_pose', 'reye_pose', 'transl', 'focal', 'princpt', 'img_size')


def reference_bodies(num: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """``num`` bodies sharing betas (one AMASS subject), camera frame, pelvis ``DISTANCE`` m ahead.

    Returns:
        Dict of float32 arrays with a leading ``(num,)`` axis (``betas`` ``(num, 10)``, ``body_pose``
        ``(num, 63)``, ...), plus ``focal``/``princpt`` ``(num, 2)`` and ``img_size`` ``(num, 2)``.
    """
    rng = np.random.default_rng(seed)
    yaw = rng.uniform(-np.pi, np.pi, num)
    tilt = rng.normal(0, 0.2, (num, 3))
    orient = (Rotation.from_euler('x', np.pi) * Rotation.from_euler('y', yaw[:, None])
              * Rotation.from_rotvec(tilt)).as_rotvec()
    betas = np.repeat(rng.normal(0, 1, (1, 10)), num, axis=0)
    small = lambda n: rng.normal(0, 0.3, (num, n))  # noqa: E731
    bodies = dict(betas=betas, expression=np.zeros((num, 10)), global_orient=orient, body_pose=small(63),
                  left_hand_pose=small(45), right_hand_pose=small(45), jaw_pose=small(3), leye_pose=small(3),
                  reye_pose=small(3), transl=np.repeat([[0, 0, DISTANCE] - PELVIS_REST], num, axis=0),
                  focal=np.full((num, 2), FOCAL), princpt=np.repeat([np.array(IMG_SIZE) / 2], num, axis=0),
                  img_size=np.repeat([IMG_SIZE], num, axis=0))
    return {k: np.asarray(v, np.int64 if k == 'img_size' else np.float32) for k, v in bodies.items()}


def write_amass(path: str, bodies: dict, gender: str = 'female', seed: int = 1, **overrides) -> str:
    """AMASS SMPL-X G sequence: z-up world root, 16 betas, hands (T, 90), eyes (T, 6)."""
    rng = np.random.default_rng(seed)
    num = len(bodies['body_pose'])
    # camera -> world is the inverse of world -> camera (x +90 deg): x -90 deg.
    root = (Rotation.from_euler('x', -90, degrees=True) * Rotation.from_rotvec(bodies['global_orient'])).as_rotvec()
    data = dict(
        root_orient=root, pose_body=bodies['body_pose'],
        pose_hand=np.concatenate([bodies['left_hand_pose'], bodies['right_hand_pose']], 1),
        pose_jaw=bodies['jaw_pose'], pose_eye=np.concatenate([bodies['leye_pose'], bodies['reye_pose']], 1),
        trans=rng.normal(0, 1, (num, 3)), betas=np.concatenate([bodies['betas'][0], rng.normal(0, 1, 6)]),
        gender=np.array(gender), surface_model_type=np.array('smplx'), mocap_frame_rate=np.array(120.0),
        num_betas=np.array(16))
    data.update(overrides)
    return _savez(path, data)


def write_bedlam(path: str, bodies: dict, with_cam_ext: bool = True, num_betas: int = 11, seed: int = 2,
                 **overrides) -> str:
    """BEDLAM label file: one row per body; ``trans_cam + cam_ext[:3, 3]`` is the camera-frame translation.

    Like the released labels it also holds keys no source reads: ``motion_info`` (a ragged, pickled object
    array), ``sub``, ``proj_verts``, ``pose_world``, ``trans_world``; ``gender`` is the subjects' gender (the fits
    are neutral). ``shape`` has ``num_betas`` columns: the reference 10, then non-zero extra components (BEDLAM's
    11th is an ordinary shape component).
    """
    rng = np.random.default_rng(seed)
    num = len(bodies['body_pose'])
    pose_cam = np.concatenate([bodies[k] for k in ('global_orient', 'body_pose', 'jaw_pose', 'leye_pose',
                                                   'reye_pose', 'left_hand_pose', 'right_hand_pose')], 1)
    cam_int = np.zeros((num, 3, 3))
    cam_int[:, 0, 0], cam_int[:, 1, 1] = bodies['focal'][:, 0], bodies['focal'][:, 1]
    cam_int[:, 0, 2], cam_int[:, 1, 2], cam_int[:, 2, 2] = bodies['princpt'][:, 0], bodies['princpt'][:, 1], 1
    shape = rng.normal(0, 0.5, (num, num_betas))
    shape[:, :10] = bodies['betas']
    motion_info = np.empty(num, dtype=object)  # ragged per-row lists, as BEDLAM stores them
    for i in range(num):
        motion_info[i] = [f'motion_{i}', list(range(i + 1))]
    data = dict(imgname=np.array([f'png/seq_{i:06d}.png' for i in range(num)]), pose_cam=pose_cam, shape=shape,
                cam_int=cam_int, center=rng.uniform(200, 800, (num, 2)), scale=rng.uniform(1, 3, num),
                gtkps=rng.uniform(0, 1000, (num, 127, 3)), gender=np.array(['female', 'male', 'female'] * num)[:num],
                motion_info=motion_info, sub=np.array([f'rp_subject_{i:03d}' for i in range(num)]),
                proj_verts=rng.uniform(0, 1000, (num, 8, 2)), pose_world=rng.normal(0, 0.3, (num, 165)),
                trans_world=rng.normal(0, 1, (num, 3)))
    if with_cam_ext:
        cam_ext = np.repeat(np.eye(4)[None], num, axis=0)
        # A rotated camera: the rotation is already inside pose_cam and must not be applied again.
        cam_ext[:, :3, :3] = Rotation.from_euler('y', 30, degrees=True).as_matrix()
        cam_ext[:, :3, 3] = rng.normal(0, 2, (num, 3))
        data.update(cam_ext=cam_ext, trans_cam=bodies['transl'] - cam_ext[:, :3, 3])
    else:
        data.update(trans_cam=bodies['transl'])
    data.update(overrides)
    return _savez(path, data)


def posedreamer_label(bodies: dict, i: int, seed: int = 3) -> dict:
    """One PoseDreamer label dict (arrays with a leading batch axis of 1, as the reference writes them)."""
    rng = np.random.default_rng(seed + i)
    label = {k: bodies[k][i][None] for k in ('betas', 'global_orient', 'body_pose', 'transl', 'jaw_pose',
                                            'leye_pose', 'reye_pose', 'left_hand_pose', 'right_hand_pose')}
    w, h = bodies['img_size'][i]
    label.update(focal=bodies['focal'][i], princpt=bodies['princpt'][i], img_shape=np.array([h, w]),
                 bbox=np.array([100.0, 50.0, 300.0, 700.0]), joints_3d=rng.normal(0, 1, (127, 3)),
                 joints_2d=rng.uniform(0, 1000, (127, 2)), markers_3d=rng.normal(0, 1, (67, 3)),
                 markers_2d=rng.uniform(0, 1000, (67, 2)))
    return label


def write_posedreamer(label_dir: str, bodies: dict, fmt: str = 'npz', **overrides) -> list[str]:
    """One label file per body (``sample_00000.<fmt>``), fmt 'npz', 'json' or 'pkl'."""
    os.makedirs(label_dir, exist_ok=True)
    paths = []
    for i in range(len(bodies['body_pose'])):
        label = {**posedreamer_label(bodies, i), **overrides}
        path = osp.join(label_dir, f'sample_{i:05d}.{fmt}')
        if fmt == 'npz':
            _savez(path, label)
        elif fmt == 'json':
            with open(path, 'w') as f:
                json.dump({k: np.asarray(v).tolist() for k, v in label.items()}, f)
        else:
            with open(path, 'wb') as f:
                pickle.dump(label, f)
        paths.append(path)
    return paths


def write_truncated(path: str, source_path: str) -> str:
    """A copy of ``source_path`` cut to half its bytes (an interrupted download)."""
    with open(source_path, 'rb') as f:
        data = f.read()
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    return path


def without(data_path: str, key: str, out_path: str) -> str:
    """A copy of an npz without ``key``."""
    with np.load(data_path, allow_pickle=True) as npz:
        data = {k: npz[k] for k in npz.files if k != key}
    return _savez(out_path, data)


def _savez(path: str, data: dict) -> str:
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'wb') as f:
        np.savez(f, **data)
    return path
