"""Loaded 2D keypoints sit on the same person's joints in each dataset's own documented order (independent of the
loader's maps): tiny annotation files give every joint distinct coordinates, and each named COCO-17 keypoint must
come back with the coordinates the dataset's order gives that name. A left/right swap or an off-by-one block
(UBody's feet/face/hands after the 17 body points) changes a named point and fails.

Documented orders (the datasets' own definitions):
- MPII (16): 0 r_ankle, 1 r_knee, 2 r_hip, 3 l_hip, 4 l_knee, 5 l_ankle, 6 pelvis, 7 thorax, 8 upper_neck,
  9 head_top, 10 r_wrist, 11 r_elbow, 12 r_shoulder, 13 l_shoulder, 14 l_elbow, 15 l_wrist.
- COCO (17): nose, l_eye, r_eye, l_ear, r_ear, l_shoulder, r_shoulder, l_elbow, r_elbow, l_wrist, r_wrist, l_hip,
  r_hip, l_knee, r_knee, l_ankle, r_ankle.
- COCO-WholeBody / UBody (133): the 17 COCO body points, 6 feet, 68 face, 21 left hand, 21 right hand.
"""
import json
import pathlib

import numpy as np
import pytest

from posedreamer_mm.registry import DATASETS

MPII16 = ('r_ankle', 'r_knee', 'r_hip', 'l_hip', 'l_knee', 'l_ankle', 'pelvis', 'thorax', 'upper_neck', 'head_top',
          'r_wrist', 'r_elbow', 'r_shoulder', 'l_shoulder', 'l_elbow', 'l_wrist')
COCO17 = ('nose', 'l_eye', 'r_eye', 'l_ear', 'r_ear', 'l_shoulder', 'r_shoulder', 'l_elbow', 'r_elbow', 'l_wrist',
          'r_wrist', 'l_hip', 'r_hip', 'l_knee', 'r_knee', 'l_ankle', 'r_ankle')
WHOLEBODY133 = (COCO17 + tuple(f'foot_{i}' for i in range(6)) + tuple(f'face_{i}' for i in range(68))
                + tuple(f'lhand_{i}' for i in range(21)) + tuple(f'rhand_{i}' for i in range(21)))
IMG_WH = (640, 480)


def _point(name: str, names: tuple) -> tuple[float, float]:
    """Distinct, in-image coordinates per joint (x from the index, y from the name's hash-free position)."""
    k = names.index(name)
    return 10.0 + 3.0 * k, 400.0 - 2.0 * k


def _write(tmp_path, names: tuple, visibility: int = 2):
    keypoints = []
    for n in names:
        keypoints += [*_point(n, names), visibility]
    fit = dict(smplx_param=dict(root_pose=[np.pi, 0, 0], body_pose=[0.0] * 63, lhand_pose=[0.0] * 45,
                                rhand_pose=[0.0] * 45, jaw_pose=[0.0] * 3, shape=[0.0] * 10, expr=[0.0] * 10,
                                trans=[0, 0, 5.0]),
               cam_param=dict(focal=[500.0, 500.0], princpt=[320.0, 240.0]))
    coco = dict(images=[dict(id=1, file_name='a.jpg', width=IMG_WH[0], height=IMG_WH[1])],
                annotations=[dict(id=7, image_id=1, iscrowd=0, bbox=[5, 5, 600, 460], keypoints=keypoints,
                                  num_keypoints=len(names))])
    (tmp_path / 'ann.json').write_text(json.dumps(coco))
    (tmp_path / 'smplx.json').write_text(json.dumps({'7': fit}))
    return dict(type='NeuralAnnotHMRDataset', ann_file=str(tmp_path / 'ann.json'),
                smplx_file=str(tmp_path / 'smplx.json'), img_root=str(tmp_path), hand_pose_mean='flat')


@pytest.mark.parametrize('dataset,names,fmt', [('coco', COCO17, 'coco17'), ('ubody', WHOLEBODY133, 'coco17'),
                                               ('mpii', MPII16, 'mpii16')])
def test_loaded_keypoints_follow_the_datasets_documented_order(tmp_path, dataset, names, fmt):
    cfg = _write(tmp_path, names)
    info = DATASETS.build(dict(cfg, keypoint_format=fmt, dataset_name=dataset)).get_data_info(0)
    kpts = info['keypoints_coco17']
    for k, name in enumerate(COCO17):
        if name in names:
            np.testing.assert_allclose(kpts[k, :2], _point(name, names), err_msg=f'{dataset} {name}')
            assert kpts[k, 2] > 0, f'{dataset} {name} lost its label'
        else:  # MPII has no face points: unlabelled, not another joint's coordinates
            assert kpts[k, 2] == 0 and not kpts[k, :2].any(), f'{dataset} {name} should be unlabelled'
    # MPII's pelvis/thorax/neck/head top have no COCO-17 twin: none of them leaks into a named keypoint.
    if dataset == 'mpii':
        extra = np.array([_point(n, names) for n in ('pelvis', 'thorax', 'upper_neck', 'head_top')])
        assert not (np.abs(kpts[:, None, :2] - extra[None]).sum(-1) < 1e-6).any()


def test_unlabelled_keypoints_stay_unlabelled(tmp_path):
    """Visibility 0 (COCO: not labelled) must stay 0 whatever the order map does with the coordinates."""
    info = DATASETS.build(dict(_write(tmp_path, MPII16, visibility=0), keypoint_format='mpii16',
                               min_keypoints=0)).get_data_info(0)
    assert not (info['keypoints_coco17'][:, 2] > 0).any()


#: SMPL-X's documented joint order (the SMPL kinematic tree, then smplx's vertex-picked nose/eyes/ears) for the
#: COCO-17 names: BEDLAM's ``gtkps`` are the 127 SMPL-X joints projected, in that order.
SMPLX_INDEX = dict(nose=55, r_eye=56, l_eye=57, r_ear=58, l_ear=59, l_shoulder=16, r_shoulder=17, l_elbow=18,
                   r_elbow=19, l_wrist=20, r_wrist=21, l_hip=1, r_hip=2, l_knee=4, r_knee=5, l_ankle=7, r_ankle=8)


def test_bedlam_keypoints_are_the_named_smplx_joints(hmr_paths, tmp_path):
    src = next(pathlib.Path(hmr_paths['bedlam']['label_root']).glob('*.npz'))
    with np.load(src) as f:
        arrays = dict(f)
    k = np.arange(127, dtype=np.float32)
    gtkps = np.stack([10.0 + 1.5 * k, 150.0 - 1.0 * k, np.ones(127)], -1)  # inside the fixture's 200 x 160 image
    arrays['gtkps'] = np.repeat(gtkps[None], len(arrays['imgname']), 0)
    (tmp_path / 'labels').mkdir()
    np.savez(tmp_path / 'labels' / src.name, **arrays)
    ds = DATASETS.build(dict(type='BEDLAMHMRDataset', label_root=str(tmp_path / 'labels'),
                             img_root=hmr_paths['bedlam']['img_root']))
    kpts = ds.get_data_info(0)['keypoints_coco17']
    for c, name in enumerate(COCO17):
        np.testing.assert_allclose(kpts[c, :2], gtkps[SMPLX_INDEX[name], :2], err_msg=name)
    assert (kpts[:, 2] > 0).all()
