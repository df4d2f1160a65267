"""The generated SMPL-X stand-in: exact SMPL-X layout, a valid mesh, a person-shaped body, fixed keypoints."""
import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from posedreamer_mm.body import _standin_mesh, _standin_parts, standin
from posedreamer_mm.body.standin import NUM_FACES, NUM_VERTS, SMPLX_VERTEX_IDS, build_standin

SHAPES = {
    'v_template': (NUM_VERTS, 3), 'f': (NUM_FACES, 3), 'weights': (NUM_VERTS, 55), 'J_regressor': (55, NUM_VERTS),
    'kintree_table': (2, 55), 'shapedirs': (NUM_VERTS, 3, 400), 'posedirs': (NUM_VERTS, 3, 486),
    'hands_componentsl': (45, 45), 'hands_componentsr': (45, 45), 'hands_meanl': (45,), 'hands_meanr': (45,),
    'lmk_faces_idx': (51,), 'lmk_bary_coords': (51, 3), 'dynamic_lmk_faces_idx': (79, 17),
    'dynamic_lmk_bary_coords': (79, 17, 3)}


@pytest.fixture(scope='module')
def data():
    return build_standin()


def test_layout_matches_smplx_npz(data):
    for key, shape in SHAPES.items():
        assert data[key].shape == shape, key
    assert np.issubdtype(data['f'].dtype, np.integer)
    assert 'stand-in' in str(data['standin_note'])


def test_vertex_ids_are_smplx_ones():
    from smplx.vertex_ids import vertex_ids
    assert SMPLX_VERTEX_IDS == vertex_ids['smplx']


def test_mesh_is_closed_consistent_and_outward(data):
    f = data['f'].astype(np.int64)
    v = data['v_template'].astype(np.float64)
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    keys = directed[:, 0] * NUM_VERTS + directed[:, 1]
    assert len(np.unique(keys)) == len(keys), 'an edge is traversed twice the same way: inconsistent winding'
    reverse = directed[:, 1] * NUM_VERTS + directed[:, 0]
    boundary = ~np.isin(keys, reverse)
    assert boundary.sum() == 20  # eye (2 x 6) and mouth (8) openings only
    assert len(np.unique(f)) == NUM_VERTS, 'unused vertices'
    area = np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1) / 2
    assert area.min() > 1e-8, 'degenerate triangle'
    adj = coo_matrix((np.ones(len(directed)), (directed[:, 0], directed[:, 1])), shape=(NUM_VERTS,) * 2)
    n, comp = connected_components(adj, directed=False)
    assert n == 7  # trunk, 2 arms (with fingers), 2 legs (with feet), 2 eyeballs
    vol = np.einsum('ij,ij->i', v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])) / 6
    for c in range(n):
        assert vol[comp[f[:, 0]] == c].sum() > 0, f'component {c} is wound inwards'
    assert 0.05 < vol.sum() < 0.09  # m^3: a ~70 kg person


def test_joints_exact_and_human_proportions(data):
    v = data['v_template'].astype(np.float64)
    reg = data['J_regressor'].astype(np.float64)
    joints = reg @ v
    np.testing.assert_allclose(reg.sum(1), 1.0, atol=1e-5)
    expected = {**_standin_parts.BODY_JOINTS, 'right_knee': (-0.10, -0.78, 0.008)}
    for name, pos in expected.items():
        np.testing.assert_allclose(joints[_standin_mesh.JOINT_INDEX[name]], pos, atol=1e-5, err_msg=name)
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.65 < height < 1.80
    assert v[:, 1].min() == pytest.approx(-1.285, abs=0.01)  # soles where SMPL-X's are
    parents = data['kintree_table'][0]
    names = standin.JOINT_NAMES_55
    for child, parent in [('left_wrist', 'left_elbow'), ('right_index2', 'right_index1'), ('jaw', 'head'),
                          ('left_thumb1', 'left_wrist'), ('left_collar', 'spine3'), ('right_foot', 'right_ankle')]:
        assert names[parents[names.index(child)]] == parent
    from smplx.joint_names import JOINT_NAMES
    assert tuple(JOINT_NAMES[:55]) == names
    assert tuple(JOINT_NAMES[76:127]) == tuple(standin._LMK)


def test_skinning_weights_follow_parts(data):
    w, v = data['weights'], data['v_template']
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    dominant = w.argmax(1)
    ids = SMPLX_VERTEX_IDS
    assert standin.JOINT_NAMES_55[dominant[ids['lindex']]] == 'left_index3'
    assert standin.JOINT_NAMES_55[dominant[ids['rthumb']]] == 'right_thumb3'
    assert standin.JOINT_NAMES_55[dominant[ids['nose']]] == 'head'
    assert standin.JOINT_NAMES_55[dominant[ids['LBigToe']]] == 'left_foot'
    assert standin.JOINT_NAMES_55[dominant[ids['RHeel']]] == 'right_ankle'
    assert standin.JOINT_NAMES_55[dominant[ids['leye']]] == 'left_eye_smplhf'
    shin = (v[:, 1] > -1.0) & (v[:, 1] < -0.9) & (v[:, 0] > 0.05)
    assert (dominant[shin] == _standin_mesh.JOINT_INDEX['left_knee']).all()


def test_fixed_keypoint_vertices_sit_on_their_parts(data):
    v = data['v_template']
    p = {k: v[i] for k, i in SMPLX_VERTEX_IDS.items()}
    head = v[v[:, 1] > 0.22]
    assert p['nose'][2] > head[:, 2].max() - 0.005 and abs(p['nose'][0]) < 0.005  # front-most, on the midline
    for side, s in (('l', 1), ('r', -1)):
        eye, ear = p[side + 'eye'], p[side + 'ear']
        assert s * eye[0] > 0.02 and 0.33 < eye[1] < 0.36 and eye[2] > p['nose'][2] - 0.04
        assert s * ear[0] > head[:, 0].max() * 0.95 - 0.01 and abs(ear[2]) < 0.03
        assert eye[1] > p['nose'][1]
        wrist_x = 0.70
        for finger in ('thumb', 'index', 'middle', 'ring', 'pinky'):
            tip = p[side + finger]
            assert s * tip[0] > wrist_x + (0.08 if finger != 'thumb' else 0.04), finger
        assert p[side + 'thumb'][2] > p[side + 'index'][2] > p[side + 'pinky'][2]  # thumb forward (palm down)
        foot = side.upper()
        big, small, heel = p[foot + 'BigToe'], p[foot + 'SmallToe'], p[foot + 'Heel']
        assert big[2] > heel[2] + 0.2 and small[2] > heel[2] + 0.15  # toes in front of the heel
        assert s * big[0] < s * small[0]  # big toe on the inside
        assert max(big[1], small[1], heel[1]) < -1.25


def test_landmarks_on_the_face(data):
    v, f = data['v_template'], data['f']
    cent = v[f[data['lmk_faces_idx']]].mean(1)
    assert (cent[:, 1] > 0.24).all() and (cent[:, 2] > 0.05).all()
    contour = v[f[data['dynamic_lmk_faces_idx'][0]]].mean(1)
    assert contour[0, 0] < -0.04 and contour[-1, 0] > 0.04 and contour[8, 1] < 0.25  # ear - chin - ear


def test_shape_components(data):
    v, sd = data['v_template'], data['shapedirs']
    heights = [np.ptp((v + sd[..., 0] * b)[:, 1]) for b in (-2, -1, 0, 1, 2)]
    assert np.all(np.diff(heights) > 0.02)
    girth = np.ptp((v + sd[..., 1] * 2)[v[:, 1] > -0.3, 2]) - np.ptp(v[v[:, 1] > -0.3, 2])
    assert girth > 0.01
    assert np.abs(sd[..., 16:300]).max() == 0  # documented: only 16 shape components are non-zero
    expr = sd[..., 300:]
    moved = np.abs(expr).max(axis=(1, 2)) > 0
    assert moved.any() and (v[moved, 1] > 0.23).all()  # expressions move face vertices only


def test_deterministic_and_seeded(data):
    again = build_standin(seed=0)
    other = build_standin(seed=1)
    for key in data:
        np.testing.assert_array_equal(data[key], again[key])
    np.testing.assert_array_equal(data['v_template'], other['v_template'])
    assert not np.array_equal(data['shapedirs'][..., 10], other['shapedirs'][..., 10])


def test_genders_differ():
    male, female = build_standin('male'), build_standin('female')
    assert np.ptp(male['v_template'][:, 1]) > np.ptp(female['v_template'][:, 1])
    with pytest.raises(ValueError, match='gender'):
        build_standin('other')


def test_written_file_loads_in_smplx(standin_model_dir):
    import smplx
    import torch
    for path in (standin_model_dir, standin_model_dir / 'SMPLX_NEUTRAL.npz'):
        model = smplx.create(model_path=str(path), model_type='smplx', gender='neutral', ext='npz')
        out = model(body_pose=torch.zeros(1, 63))
        assert out.vertices.shape == (1, NUM_VERTS, 3) and out.joints.shape == (1, 127, 3)
    model = smplx.create(model_path=str(standin_model_dir), model_type='smplx', use_face_contour=True)
    assert model().joints.shape == (1, 144, 3)
    assert (standin_model_dir / 'SMPLX_NEUTRAL.npz').stat().st_size < 8e6
