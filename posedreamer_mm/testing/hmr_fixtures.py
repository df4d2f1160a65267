"""Tiny HMR datasets of every supported kind, written on demand (tests, config smoke runs, benchmarks).

:func:`write_hmr_fixtures` poses the SMPL-X **stand-in** (not SMPL-X; :mod:`posedreamer_mm.body.standin`) a few
times, renders each body as a shaded image with the numpy reference rasteriser and writes the same kind of bodies
in each dataset's own file format: BEDLAM label npz + scene image folders, PoseDreamer per-image label files,
this project's generated-dataset format (sharded writer), and COCO / MPII / UBody-style keypoint jsons with
NeuralAnnot SMPL-X jsons (hands stored relative to the mean hand, as NeuralAnnot does). Labels are exact for the
images (projected stand-in joints), so the files can also check geometry. :func:`hmr_dataset_cfgs` gives
ready-to-build dataset configs for them.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation

from posedreamer_mm.body.body_model import SMPLXBodyModel
from posedreamer_mm.body.camera import project_points
from posedreamer_mm.body.joint_maps import COCO17_NAMES, smplx_to_coco17
from posedreamer_mm.body.sources.base import SMPLX_NEUTRAL_PELVIS_REST
from posedreamer_mm.render.maps import lambert
from posedreamer_mm.render.rasterizer import vertex_normals
from posedreamer_mm.testing.reference_rasterizer import reference_rasterize

#: Image size (W, H) and focal length (px) of the fixture images: small, non-square.
IMG_WH = (200, 160)
FOCAL = 220.0
#: COCO-17 -> MPII-16 (inverse of the NeuralAnnot dataset's map; MPII's pelvis/thorax/neck/head are filled
#: from hip and shoulder midpoints and the face).
_COCO_TO_MPII = {16: 0, 14: 1, 12: 2, 11: 3, 13: 4, 15: 5, 10: 10, 8: 11, 6: 12, 5: 13, 7: 14, 9: 15}


def fixture_bodies(num: int, seed: int = 0, distance: float = 4.0) -> dict[str, np.ndarray]:
    """``num`` random moderate poses facing roughly the camera, pelvis ``distance`` m ahead (camera frame).

    Returns:
        ``{name: (num, D) float32}`` for the SMPL-X parameters (hands relative to the flat hand, 10 betas).
    """
    rng = np.random.default_rng(seed)
    yaw = rng.uniform(-0.8, 0.8, num)
    orient = (Rotation.from_euler('x', np.pi) * Rotation.from_euler('y', yaw[:, None])
              * Rotation.from_rotvec(rng.normal(0, 0.1, (num, 3)))).as_rotvec()
    small = lambda n, s=0.25: rng.normal(0, s, (num, n))  # noqa: E731
    betas = np.zeros((num, 10))
    betas[:, :9] = rng.normal(0, 0.8, (num, 9))
    offset = np.stack([rng.uniform(-0.3, 0.3, num), rng.uniform(-0.1, 0.1, num), np.full(num, distance)], 1)
    bodies = dict(global_orient=orient, body_pose=small(63), left_hand_pose=small(45), right_hand_pose=small(45),
                  jaw_pose=small(3, 0.1), betas=betas, expression=small(10, 0.5),
                  transl=offset - np.asarray(SMPLX_NEUTRAL_PELVIS_REST))
    return {k: v.astype(np.float32) for k, v in bodies.items()}


def _pose_and_render(model: SMPLXBodyModel, bodies: dict, seed: int) -> list[dict]:
    """Forward, project and shade each body: ``img`` (H, W, 3) RGB, ``joints_2d`` (127, 2), ``joints_3d``."""
    with torch.no_grad():
        out = model(**{k: torch.as_tensor(v) for k, v in bodies.items()})
    focal, princpt = np.full(2, FOCAL, np.float32), np.asarray(IMG_WH, np.float32) / 2
    rng = np.random.default_rng(seed)
    items = []
    for b in range(len(bodies['betas'])):
        verts, joints = out.vertices[b].numpy(), out.joints[b].numpy()
        ras = reference_rasterize(verts, model.faces, focal, princpt, IMG_WH, colors=vertex_normals(verts, model.faces))
        normal = ras['color'] / np.maximum(np.linalg.norm(ras['color'], axis=-1, keepdims=True), 1e-9)
        normal *= np.where(normal[..., 2:] > 0, -1.0, 1.0)  # face the camera
        bg = rng.integers(20, 90, 3)
        img = lambert(normal, ras['mask'], albedo=rng.uniform(0.5, 0.9, 3), background=bg)
        uv = project_points(joints, focal, princpt).numpy()
        items.append(dict(img=img, joints_2d=uv, joints_3d=joints, focal=focal, princpt=princpt))
    return items


def _coco17(uv: np.ndarray) -> np.ndarray:
    kpts = smplx_to_coco17(uv)
    w, h = IMG_WH
    inside = (kpts[:, 0] >= 0) & (kpts[:, 0] <= w - 1) & (kpts[:, 1] >= 0) & (kpts[:, 1] <= h - 1)
    return np.concatenate([kpts, 2.0 * inside[:, None]], 1).astype(np.float32)


def _bbox_xywh(uv: np.ndarray) -> list[float]:
    lo, hi = uv.min(0) - 4, uv.max(0) + 4
    return [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]


def _write_rgb(path: str, img: np.ndarray) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise OSError(f'could not write {path}')


def _param_rows(bodies: dict, b: int) -> dict:
    return {k: v[b] for k, v in bodies.items()}


def _write_bedlam(root: Path, bodies: dict, items: list[dict]) -> dict:
    n = len(items)
    pose_cam = np.concatenate([bodies['global_orient'], bodies['body_pose'], bodies['jaw_pose'],
                               np.zeros((n, 6), np.float32), bodies['left_hand_pose'], bodies['right_hand_pose']], 1)
    cam_int = np.zeros((n, 3, 3), np.float32)
    cam_int[:, 0, 0] = cam_int[:, 1, 1] = FOCAL
    cam_int[:, 0, 2], cam_int[:, 1, 2], cam_int[:, 2, 2] = IMG_WH[0] / 2, IMG_WH[1] / 2, 1
    names = [f'seq_{i:06d}/seq_{i:06d}_0000.png' for i in range(n)]
    for name, item in zip(names, items):
        _write_rgb(str(root / 'images' / 'scene0' / 'png' / name), item['img'])
    label = root / 'labels' / 'scene0.npz'
    label.parent.mkdir(parents=True, exist_ok=True)
    np.savez(label, imgname=np.array(names), pose_cam=pose_cam, shape=np.pad(bodies['betas'], ((0, 0), (0, 1))),
             trans_cam=bodies['transl'], cam_int=cam_int, gender=np.array(['female'] * n),
             gtkps=np.stack([np.concatenate([it['joints_2d'], np.ones((127, 1))], 1) for it in items]))
    return dict(label_root=str(root / 'labels'), img_root=str(root / 'images'))


def _write_posedreamer(root: Path, bodies: dict, items: list[dict]) -> dict:
    for b, item in enumerate(items):
        stem = root / f'pd_{b:05d}'
        _write_rgb(str(stem) + '.jpg', item['img'])
        np.savez(str(stem) + '.npz', **_param_rows(bodies, b), focal=item['focal'], princpt=item['princpt'],
                 img_shape=np.array([IMG_WH[1], IMG_WH[0]]), joints_3d=item['joints_3d'],
                 joints_2d=item['joints_2d'], keypoints_coco17=_coco17(item['joints_2d']),
                 bbox=np.array(_bbox_xywh(item['joints_2d']), np.float32))
    return dict(label_root=str(root))


def _write_generated(root: Path, bodies: dict, items: list[dict]) -> dict:
    """A generated dataset (sharded writer format) whose rows are the renders and their labels."""
    from posedreamer_mm.body.sample import BodySample
    from posedreamer_mm.generation.writer import ShardedDatasetWriter
    n = len(items)
    writer = ShardedDatasetWriter(shard_size=max(1, n // 2), save_controls=False)
    writer.prepare_output(str(root), dict(fingerprint='hmr-fixture', config={}, num_samples=n))
    for shard in range(writer.num_shards(n)):
        builder = writer.open_shard(str(root), shard, n)
        for b in builder.indices:
            item = items[b]
            sample = BodySample(id=f'gen_{b:05d}', **_param_rows(bodies, b), focal=item['focal'],
                                princpt=item['princpt'], img_size=IMG_WH, source='fixture',
                                joints_3d=item['joints_3d'], joints_2d=item['joints_2d'],
                                keypoints_coco17=_coco17(item['joints_2d']), bbox=_bbox_xywh(item['joints_2d']))
            builder.add(b, dict(sample=sample, img=item['img'], seed=b, scores=dict(oks=0.9)))
        builder.commit()
    writer.finalize(str(root), n)
    return dict(data_root=str(root))


def _neuralannot(bodies: dict, b: int, item: dict, hands_mean: tuple[np.ndarray, np.ndarray]) -> dict:
    p = _param_rows(bodies, b)
    return dict(smplx_param=dict(
        root_pose=p['global_orient'].tolist(), body_pose=p['body_pose'].tolist(),
        lhand_pose=(p['left_hand_pose'] - hands_mean[0]).tolist(),
        rhand_pose=(p['right_hand_pose'] - hands_mean[1]).tolist(), jaw_pose=p['jaw_pose'].tolist(),
        shape=p['betas'].tolist(), expr=p['expression'].tolist(), trans=p['transl'].tolist()),
        cam_param=dict(focal=item['focal'].tolist(), princpt=item['princpt'].tolist()))


def _write_coco_like(root: Path, kind: str, bodies: dict, items: list[dict], hands_mean) -> dict:
    images, anns, fits = [], [], {}
    for b, item in enumerate(items):
        file_name = f'{kind}_{b:06d}.jpg'
        _write_rgb(str(root / 'images' / file_name), item['img'])
        img = dict(id=b + 1, file_name=file_name, width=IMG_WH[0], height=IMG_WH[1])
        kpts = _coco17(item['joints_2d'])
        ann = dict(id=100 + b, image_id=b + 1, category_id=1, iscrowd=0, bbox=_bbox_xywh(item['joints_2d']),
                   num_keypoints=int((kpts[:, 2] > 0).sum()))
        if kind == 'mpii':
            mpii = np.zeros((16, 3), np.float32)
            for src, dst in _COCO_TO_MPII.items():
                mpii[dst] = kpts[src]
            ann['keypoints'] = mpii.reshape(-1).tolist()
            img['act_name'] = 'yoga, Power' if b % 2 == 0 else 'bicycling, mountain'
        else:
            ann['keypoints'] = kpts.reshape(-1).tolist()
        if kind == 'ubody':  # COCO-WholeBody extras, and UBody's hand validity flags
            ann.update(foot_kpts=[0.0] * 18, face_kpts=[0.0] * 204, lefthand_kpts=[0.0] * 63,
                       righthand_kpts=[0.0] * 63, lefthand_valid=True, righthand_valid=b % 2 == 0)
        images.append(img)
        anns.append(ann)
        fits[str(ann['id'])] = _neuralannot(bodies, b, item, hands_mean)
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    coco = dict(info=dict(description=f'posedreamer_mm {kind} stand-in (SMPL-X stand-in renders), not {kind}'),
                images=images, annotations=anns,
                categories=[dict(id=1, name='person', keypoints=list(COCO17_NAMES))])
    ann_file, smplx_file = root / 'annotations' / 'train.json', root / 'annotations' / 'train_smplx.json'
    ann_file.write_text(json.dumps(coco))
    smplx_file.write_text(json.dumps(fits))
    return dict(ann_file=str(ann_file), smplx_file=str(smplx_file), img_root=str(root / 'images'))


def write_hmr_fixtures(out_dir: str | os.PathLike, num: int = 4, seed: int = 0,
                       smplx_model_dir: str | os.PathLike | None = None) -> dict[str, dict | str]:
    """Writes a tiny dataset of each kind under ``out_dir`` (a few seconds).

    Args:
        out_dir: Root (created); sub-folders ``bedlam``, ``posedreamer``, ``coco``, ``mpii``, ``ubody``,
            ``generated``.
        num: People (= images) per dataset (one per image).
        seed: Poses, colours.
        smplx_model_dir: SMPL-X model dir used to pose and render; default: a stand-in written to
            ``out_dir/smplx_standin``.

    Returns:
        ``{'smplx_model_dir': str, 'bodies': {kind: params}, 'bedlam': {label_root, img_root},
        'posedreamer': {label_root}, 'coco'|'mpii'|'ubody': {ann_file, smplx_file, img_root},
        'generated': {data_root}}`` (the keyword
        arguments of each dataset, see :func:`hmr_dataset_cfgs`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if smplx_model_dir is None:
        from posedreamer_mm.body.standin import write_standin_smplx
        smplx_model_dir = out / 'smplx_standin'
        if not (smplx_model_dir / 'SMPLX_NEUTRAL.npz').is_file():
            write_standin_smplx(smplx_model_dir)
    model = SMPLXBodyModel(smplx_model_dir)
    hands_mean = tuple(m.detach().numpy().reshape(45).astype(np.float32)
                       for m in _file_hand_means(model))
    paths: dict = dict(smplx_model_dir=str(smplx_model_dir), bodies={})
    for k, kind in enumerate(('bedlam', 'posedreamer', 'coco', 'mpii', 'ubody', 'generated')):
        bodies = fixture_bodies(num, seed * 10 + k)
        items = _pose_and_render(model, bodies, seed * 10 + k)
        paths['bodies'][kind] = bodies
        root = out / kind
        if kind == 'bedlam':
            paths[kind] = _write_bedlam(root, bodies, items)
        elif kind == 'posedreamer':
            paths[kind] = _write_posedreamer(root, bodies, items)
        elif kind == 'generated':
            paths[kind] = _write_generated(root, bodies, items)
        else:
            paths[kind] = _write_coco_like(root, kind, bodies, items, hands_mean)
    return paths


def _file_hand_means(model: SMPLXBodyModel) -> tuple[torch.Tensor, torch.Tensor]:
    """The model file's ``hands_meanl``/``hands_meanr`` (NeuralAnnot hands are relative to them)."""
    with np.load(model.model_file, allow_pickle=False) as npz:
        return torch.as_tensor(npz['hands_meanl']), torch.as_tensor(npz['hands_meanr'])


def hmr_dataset_cfgs(paths: dict, pipeline: list | None = None, test_mode: bool = False) -> dict[str, dict]:
    """Dataset configs (``DATASETS.build``-ready) for the files :func:`write_hmr_fixtures` wrote."""
    pipeline = pipeline or []
    common = dict(pipeline=pipeline, test_mode=test_mode)
    cfgs = dict(
        bedlam=dict(type='BEDLAMHMRDataset', **paths['bedlam'], **common),
        posedreamer=dict(type='PoseDreamerHMRDataset', **paths['posedreamer'], **common),
        coco=dict(type='NeuralAnnotHMRDataset', dataset_name='coco', smplx_model_path=paths['smplx_model_dir'],
                  **paths['coco'], **common),
        mpii=dict(type='NeuralAnnotHMRDataset', dataset_name='mpii', keypoint_format='mpii16',
                  smplx_model_path=paths['smplx_model_dir'], **paths['mpii'], **common),
        ubody=dict(type='NeuralAnnotHMRDataset', dataset_name='ubody', smplx_model_path=paths['smplx_model_dir'],
                   **paths['ubody'], **common),
        generated=dict(type='GeneratedHMRDataset', **paths['generated'], **common))
    return cfgs


__all__ = ['IMG_WH', 'FOCAL', 'fixture_bodies', 'write_hmr_fixtures', 'hmr_dataset_cfgs']
