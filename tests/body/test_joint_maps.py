"""Joint maps: every mapping checked on named joints, numpy and torch."""
import numpy as np
import torch

from posedreamer_mm.body import joint_maps as jm


def _encoded(n: int, batch=(2,)):
    """Joints whose coordinates encode their own index: x = index, y = -index, z = 1."""
    idx = np.arange(n, dtype=np.float32)
    return np.broadcast_to(np.stack([idx, -idx, np.ones_like(idx)], -1), (*batch, n, 3)).copy()


def test_names():
    assert len(jm.SMPLX_JOINT_NAMES) == 127 and len(jm.SMPLX_JOINT_NAMES_CONTOUR) == 144
    assert jm.SMPLX_JOINT_NAMES[:3] == ('pelvis', 'left_hip', 'right_hip')
    assert jm.SMPLX_JOINT_NAMES_CONTOUR[-1] == 'left_contour_1'


def test_smplx_to_coco17_picks_named_joints():
    # The literal indices (smplx's JOINT_NAMES: 55 nose, 56/57 right/left eye, 58/59 right/left ear vertex
    # keypoints; 16-21 shoulders, elbows, wrists; 1/2 hips, 4/5 knees, 7/8 ankles), not re-derived from names.
    assert list(jm.SMPLX_TO_COCO17) == [55, 57, 56, 59, 58, 16, 17, 18, 19, 20, 21, 1, 2, 4, 5, 7, 8]
    names = [jm.SMPLX_JOINT_NAMES[i] for i in jm.SMPLX_TO_COCO17]
    assert names == list(jm.COCO17_NAMES)  # face points are the vertex-based ones, not the eyeball joints
    assert 'left_eye_smplhf' not in names
    for n_joints in (127, 144):
        joints = _encoded(n_joints)
        coco = jm.smplx_to_coco17(joints)
        assert coco.shape == (2, 17, 3)
        for k, name in enumerate(jm.COCO17_NAMES):
            assert coco[0, k, 0] == jm.SMPLX_JOINT_INDEX[name]
        torch.testing.assert_close(jm.smplx_to_coco17(torch.from_numpy(joints)), torch.from_numpy(coco))


def test_openpose18_order_and_neck():
    joints = _encoded(127)
    op = jm.smplx_to_openpose18(joints)
    assert op.shape == (2, 18, 3)
    for k, name in enumerate(jm.OPENPOSE18_NAMES):
        if name == 'neck':
            ls, rs = jm.SMPLX_JOINT_INDEX['left_shoulder'], jm.SMPLX_JOINT_INDEX['right_shoulder']
            np.testing.assert_allclose(op[0, k], (joints[0, ls] + joints[0, rs]) / 2)
        else:
            assert op[0, k, 0] == jm.SMPLX_JOINT_INDEX[name], name
    assert jm.OPENPOSE18_NAMES[2] == 'right_shoulder' and jm.OPENPOSE18_NAMES[15] == 'left_eye'
    torch.testing.assert_close(jm.smplx_to_openpose18(torch.from_numpy(joints)), torch.from_numpy(op))


def test_coco_to_openpose_visibility():
    kpts = np.zeros((17, 3), np.float32)
    kpts[:, 0] = np.arange(17)
    kpts[:, 2] = 1.0
    kpts[6, 2] = 0.0  # right shoulder not visible -> neither is the neck
    op = jm.coco17_to_openpose18(kpts)
    assert op[1, 0] == 5.5 and op[1, 2] == 0.0
    assert op[0, 0] == 0 and op[2, 0] == 6 and op[5, 0] == 5  # nose, right/left shoulder
    op_t = jm.coco17_to_openpose18(torch.from_numpy(kpts))
    torch.testing.assert_close(op_t, torch.from_numpy(op))


def test_skeletons_and_flip_pairs():
    for a, b in jm.COCO17_SKELETON:
        assert 0 <= a < 17 and 0 <= b < 17
    for a, b in jm.COCO17_FLIP_PAIRS:
        assert jm.COCO17_NAMES[a].replace('left', 'right') == jm.COCO17_NAMES[b]
    assert len(jm.OPENPOSE18_LIMBS) == 17 and len(jm.OPENPOSE18_COLORS) == 18
    limbs = {(jm.OPENPOSE18_NAMES[a], jm.OPENPOSE18_NAMES[b]) for a, b in jm.OPENPOSE18_LIMBS}
    assert ('neck', 'right_shoulder') in limbs and ('left_knee', 'left_ankle') in limbs
    assert ('nose', 'right_eye') in limbs and ('right_eye', 'right_ear') in limbs


def test_flip_permutation():
    for n in (127, 144):
        perm = jm.smplx_flip_permutation(n)
        np.testing.assert_array_equal(perm[perm], np.arange(n))
        names = jm.SMPLX_JOINT_NAMES_CONTOUR
        assert names[perm[jm.SMPLX_JOINT_INDEX['left_wrist']]] == 'right_wrist'
        assert names[perm[jm.SMPLX_JOINT_INDEX['left_eye']]] == 'right_eye'
        assert perm[jm.SMPLX_JOINT_INDEX['nose']] == jm.SMPLX_JOINT_INDEX['nose']
