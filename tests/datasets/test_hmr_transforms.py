"""HMR transforms: the flip is an involution, and after flip / box augmentation / rotation (camera roll) / crop the
packed keypoints equal the projection of the packed SMPL-X body through the packed camera and crop affine."""
import copy

import numpy as np
import pytest
import torch

from posedreamer_mm.body.body_model import SMPLXBodyModel
from posedreamer_mm.body.camera import crop_image, project_points
from posedreamer_mm.body.joint_maps import smplx_to_coco17
from posedreamer_mm.registry import DATASETS, TRANSFORMS
from posedreamer_mm.testing.hmr_fixtures import hmr_dataset_cfgs

#: COCO-17 body points (shoulders to ankles: skeleton joints, mirror-exact in the stand-in). Face points of a
#: *flipped* stand-in body are off by up to ~1 px: its ear keypoint vertices are not mirror twins (16.7 mm,
#: measured in tests/body/test_flip.py) and its expression directions 5+ are random, asymmetric fields.
BODY = list(range(5, 17))


@pytest.fixture(scope='module')
def loaded(hmr_paths):
    ds = DATASETS.build(hmr_dataset_cfgs(hmr_paths, pipeline=[dict(type='LoadHMRImage')])['posedreamer'])
    return [ds[i] for i in range(len(ds))]


@pytest.fixture(scope='module')
def body_model(standin_model_dir):
    return SMPLXBodyModel(standin_model_dir)


def _assert_same(a: dict, b: dict):
    assert set(a) == set(b)
    for key in a:
        if isinstance(a[key], dict):
            _assert_same(a[key], b[key])
        elif isinstance(a[key], np.ndarray):
            np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=key)
        else:
            assert a[key] == b[key], key


def test_flip_twice_returns_the_sample(loaded, standin_model_dir):
    flip = TRANSFORMS.build(dict(type='HMRRandomFlip', prob=1.0, body_model=dict(type='SMPLXBodyModel',
                                                                                   model_path=str(standin_model_dir))))
    center = TRANSFORMS.build(dict(type='HMRBBoxCenterScale'))
    original = center(copy.deepcopy(loaded[0]))
    once = flip(copy.deepcopy(original))
    assert once['flip'] and not np.array_equal(once['img'], original['img'])
    twice = flip(once)
    assert twice.pop('flip') is False
    _assert_same(original, twice)


def _packed_projection(packed: dict, model) -> tuple[np.ndarray, np.ndarray]:
    """(COCO-17 projected into the crop through the packed camera and affine, packed crop keypoints)."""
    gt, meta = packed['data_samples'].gt_instances, packed['data_samples'].metainfo
    names = ('global_orient', 'body_pose', 'left_hand_pose', 'right_hand_pose', 'jaw_pose', 'betas', 'expression',
             'transl')
    with torch.no_grad():
        joints = model(**{n: gt[f'smplx_{n}'] for n in names}).joints[0].double()
    full = project_points(smplx_to_coco17(joints), meta['focal'], meta['princpt']).numpy()
    crop = full @ meta['crop_trans'][:, :2].T.astype(np.float64) + meta['crop_trans'][:, 2]
    return crop, gt.keypoints[0].double().numpy()


@pytest.mark.parametrize('flip,rotate', [(False, False), (True, False), (False, True), (True, True)])
def test_packed_keypoints_are_the_projected_packed_body(loaded, body_model, standin_model_dir, flip, rotate):
    np.random.seed(3)
    bm = dict(type='SMPLXBodyModel', model_path=str(standin_model_dir))
    pipeline = [dict(type='HMRRandomFlip', prob=float(flip), body_model=bm), dict(type='HMRBBoxCenterScale'),
                dict(type='HMRRandomBBoxTransform', shift_prob=1.0, rotate_prob=float(rotate), rotate_factor=25.0),
                dict(type='HMRTopdownAffine', input_size=(96, 128), body_model=bm), dict(type='PackHMRInputs')]
    transforms = [TRANSFORMS.build(t) for t in pipeline]
    for sample in loaded:
        results = copy.deepcopy(sample)
        for t in transforms:
            results = t(results)
        meta = results['data_samples'].metainfo
        assert meta['flip'] == flip and (meta['bbox_rotation'] != 0) == rotate
        projected, packed = _packed_projection(results, body_model)
        np.testing.assert_allclose(projected[BODY], packed[BODY], atol=0.02)
        assert np.abs(projected[:5] - packed[:5]).max() < (1.5 if flip else 0.02)


def test_crop_uses_the_camera_module_pixel_convention(loaded):
    results = copy.deepcopy(loaded[1])
    for t in (dict(type='HMRBBoxCenterScale'), dict(type='HMRTopdownAffine', input_size=(96, 128))):
        results = TRANSFORMS.build(t)(results)
    x0, y0, x1, y1 = results['bbox']
    expected = crop_image(loaded[1]['img'], (x0, y0, x1 - x0, y1 - y0), (96, 128))
    assert np.abs(results['img'].astype(int) - expected).max() <= 1
    assert results['img'].shape == (128, 96, 3)


def test_packed_format(loaded):
    pipeline = [dict(type='HMRBBoxCenterScale'), dict(type='HMRTopdownAffine', input_size=(192, 256)),
                dict(type='HMRColorJitter', prob=1.0), dict(type='PackHMRInputs')]
    results = copy.deepcopy(loaded[2])
    for t in pipeline:
        results = TRANSFORMS.build(t)(results)
    assert results['inputs'].shape == (3, 256, 192) and results['inputs'].dtype == torch.uint8
    gt, meta = results['data_samples'].gt_instances, results['data_samples'].metainfo
    shapes = dict(bboxes=(1, 4), keypoints=(1, 17, 2), keypoints_visible=(1, 17), smplx_global_orient=(1, 3),
                  smplx_body_pose=(1, 63), smplx_left_hand_pose=(1, 45), smplx_right_hand_pose=(1, 45),
                  smplx_jaw_pose=(1, 3), smplx_betas=(1, 10), smplx_expression=(1, 10), smplx_transl=(1, 3),
                  has_smplx_global_orient=(1,), has_smplx_body_pose=(1,), has_smplx_hands=(1,),
                  has_smplx_face=(1,), has_smplx_betas=(1,), has_smplx_transl=(1,), joints_3d=(1, 127, 3),
                  has_joints_3d=(1,))
    for key, shape in shapes.items():
        assert tuple(gt[key].shape) == shape and gt[key].dtype == torch.float32, key
    assert meta['crop_trans'].shape == (2, 3) and meta['input_size'] == (192, 256)
    assert tuple(meta['img_shape_full']) == (160, 200)
    for key in ('focal', 'princpt', 'bbox_center', 'bbox_scale'):
        assert np.shape(meta[key]) == (2,), key
    assert meta['dataset_name'] == 'posedreamer' and meta['gender'] == 'neutral' and meta['id']


def test_color_jitter_keeps_geometry_and_changes_colour(loaded):
    img = loaded[0]['img']
    np.random.seed(0)
    out = TRANSFORMS.build(dict(type='HMRColorJitter', prob=1.0))(dict(img=img.copy()))['img']
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
    same = TRANSFORMS.build(dict(type='HMRColorJitter', prob=0.0))(dict(img=img.copy()))['img']
    assert np.array_equal(same, img)


@pytest.fixture(scope='module')
def gendered_dir(tmp_path_factory):
    """Neutral stand-in plus a "female" model whose template is raised 6 cm and moved 2 cm forward (still mirror
    symmetric, as SMPL-X templates are): the stand-in's own
    genders share their pelvis to 0.2 mm, real SMPL-X genders differ by centimetres, which this makes visible."""
    from posedreamer_mm.body.standin import ensure_standin_smplx
    out = tmp_path_factory.mktemp('gendered_standin')
    neutral = ensure_standin_smplx(out, genders=('neutral',))['neutral']
    with np.load(neutral, allow_pickle=False) as f:
        arrays = dict(f)
    arrays['v_template'] = arrays['v_template'] + np.array([0.0, 0.06, 0.02], arrays['v_template'].dtype)
    np.savez(out / 'SMPLX_FEMALE.npz', **arrays)
    return out


def test_flip_and_roll_pivot_on_the_pelvis_of_the_samples_gender(loaded, gendered_dir):
    """A female label (its betas are the female model's) after flip + roll must still project onto its keypoints
    through the *female* model; the neutral pelvis used as pivot before left it off by the gendered pelvis gap."""
    female = SMPLXBodyModel(gendered_dir, gender='female')
    bm = dict(type='SMPLXBodyModel', model_path=str(gendered_dir))
    pipeline = [TRANSFORMS.build(t) for t in (
        dict(type='HMRRandomFlip', prob=1.0, body_model=bm), dict(type='HMRBBoxCenterScale'),
        dict(type='HMRRandomBBoxTransform', shift_prob=0.0, scale_prob=0.0, rotate_prob=1.0, rotate_factor=30.0),
        dict(type='HMRTopdownAffine', input_size=(96, 128), body_model=bm), dict(type='PackHMRInputs'))]
    np.random.seed(5)
    errors = []
    for sample in loaded:
        results = copy.deepcopy(sample)
        results['gender'] = 'female'
        smplx = {k: torch.as_tensor(np.asarray(v, np.float32)).reshape(1, -1) for k, v in results['smplx'].items()}
        with torch.no_grad():  # labels made with the female model: its joints are what the image shows
            joints = female(**smplx).joints[0].double()
        results['keypoints_coco17'][:, :2] = project_points(smplx_to_coco17(joints), results['focal'],
                                                             results['princpt']).numpy()
        for t in pipeline:
            results = t(results)
        assert results['data_samples'].metainfo['gender'] == 'female'
        projected, packed = _packed_projection(results, female)
        errors.append(np.abs(projected[BODY] - packed[BODY]).max())
    assert max(errors) < 0.02, errors


def test_a_single_file_body_model_refuses_another_gender(loaded, standin_model_dir):
    import pathlib
    neutral = next(pathlib.Path(standin_model_dir).rglob('SMPLX_NEUTRAL.npz'))
    flip = TRANSFORMS.build(dict(type='HMRRandomFlip', prob=1.0,
                                 body_model=dict(type='SMPLXBodyModel', model_path=str(neutral))))
    flip(copy.deepcopy(loaded[0]))  # the file's own gender works
    results = copy.deepcopy(loaded[0])
    results['gender'] = 'male'
    with pytest.raises(ValueError, match='a male body, but model_path is the file .*SMPLX_NEUTRAL.npz'):
        flip(results)


_FORK_PELVIS = {}


def _pelvis_in_child(gender):
    return _FORK_PELVIS['pelvis'](np.ones(10), gender)


@pytest.mark.timeout(120)
def test_gendered_pivots_work_in_a_fork_pool_after_torch(gendered_dir):
    """Every gender's map is read when the transform is built: a first male/female sample in a fork worker of a
    parent that ran torch used to build an SMPL-X layer there and hung."""
    import multiprocessing as mp

    from posedreamer_mm.datasets.transforms.hmr_geometric import GenderedPelvis
    pelvis = GenderedPelvis(dict(type='SMPLXBodyModel', model_path=str(gendered_dir)))
    _FORK_PELVIS['pelvis'] = pelvis
    torch.randn(256, 256) @ torch.randn(256, 256)  # the parent has used torch's thread pool
    with mp.get_context('fork').Pool(2) as pool:
        got = pool.map_async(_pelvis_in_child, ['female', 'neutral']).get(60)
    np.testing.assert_allclose(got, [pelvis(np.ones(10), 'female'), pelvis(np.ones(10), 'neutral')])
    # No male file in that directory: a male sample names the file that is missing.
    with pytest.raises(FileNotFoundError, match='SMPLX_MALE.npz'):
        pelvis(np.ones(10), 'male')
    with pytest.raises(ValueError, match="unknown gender 'Female'"):
        pelvis(np.ones(10), 'Female')


def _packed_body_joints(packed: dict, model) -> np.ndarray:
    """``(J, 3)`` joints of the packed SMPL-X parameters, posed by ``model`` (camera frame, metres)."""
    gt = packed['data_samples'].gt_instances
    names = ('global_orient', 'body_pose', 'left_hand_pose', 'right_hand_pose', 'jaw_pose', 'betas', 'expression',
             'transl')
    with torch.no_grad():
        return model(**{n: gt[f'smplx_{n}'] for n in names}).joints[0].double().numpy()


#: SMPL-X skeleton joints (pelvis to fingers) but the jaw: the stand-in's expression directions 5+ are asymmetric
#: fields that move its jaw joint ~0.5 mm off its mirror twin (its face landmarks more).
SKELETON = [j for j in range(55) if j != 22]


@pytest.mark.parametrize('flip', [False, True])
def test_packed_joints_3d_are_the_joints_of_the_packed_body(loaded, body_model, standin_model_dir, flip):
    """After flip and a camera roll the 3D label must still be the posed body's joints: the independent fact is the
    body model run on the packed SMPL-X parameters (before, only the 2D side was checked against it)."""
    bm = dict(type='SMPLXBodyModel', model_path=str(standin_model_dir))
    pipeline = [TRANSFORMS.build(t) for t in (
        dict(type='HMRRandomFlip', prob=float(flip), body_model=bm), dict(type='HMRBBoxCenterScale'),
        dict(type='HMRRandomBBoxTransform', shift_prob=0.0, scale_prob=0.0, rotate_prob=1.0, rotate_factor=25.0),
        dict(type='HMRTopdownAffine', input_size=(96, 128), body_model=bm), dict(type='PackHMRInputs'))]
    np.random.seed(11)
    for sample in loaded:
        assert sample.get('joints_3d') is not None
        before = _packed_body_joints(dict(data_samples=_pack_raw(sample)), body_model)
        np.testing.assert_allclose(before, sample['joints_3d'], atol=1e-4)  # the fixture labels are the body's
        results = copy.deepcopy(sample)
        for t in pipeline:
            results = t(results)
        assert abs(results['data_samples'].metainfo['bbox_rotation']) > 1.0
        packed = results['data_samples'].gt_instances.joints_3d[0].double().numpy()
        np.testing.assert_allclose(packed[SKELETON], _packed_body_joints(results, body_model)[SKELETON], atol=2e-4)


def _pack_raw(sample: dict):
    """The sample packed without any geometric transform (its own parameters)."""
    results = TRANSFORMS.build(dict(type='PackHMRInputs'))(copy.deepcopy(sample))
    return results['data_samples']


@pytest.mark.parametrize('fx,fy', [(500.0, 500.0), (420.0, 610.0)])
def test_a_90_degree_roll_maps_keypoints_by_k_rz_k_inverse(loaded, body_model, fx, fy):
    """A 90-degree roll (the box rotation is in degrees) maps pixel (u, v) to the point that K Rz(90) K^-1 gives by
    hand: Rz(90) sends the normalised ray (x, y) to (-y, x), so (u, v) -> (cx - fx (v - cy) / fy, cy + fy (u - cx)
    / fx). Radians taken as degrees (or the inverse) would rotate by 1.57 or 5157 degrees instead."""
    results = copy.deepcopy(loaded[0])
    results['smplx']['betas'] = np.zeros(10, np.float32)  # the default pivot is exact for the neutral mean shape
    before = _posed(body_model, results['smplx'])
    results['focal'], results['princpt'] = np.array([fx, fy], np.float32), np.array([97.0, 83.0], np.float32)
    results = TRANSFORMS.build(dict(type='HMRBBoxCenterScale'))(results)
    results['bbox_rotation'] = 90.0
    kpts = np.array(results['keypoints_coco17'], np.float64)
    out = TRANSFORMS.build(dict(type='HMRTopdownAffine', input_size=(96, 128)))(results)
    cx, cy = 97.0, 83.0
    expected = np.stack([cx - fx * (kpts[:, 1] - cy) / fy, cy + fy * (kpts[:, 0] - cx) / fx], -1)
    np.testing.assert_allclose(out['keypoints_full'][:, :2], expected, atol=1e-3)
    np.testing.assert_array_equal(out['keypoints_full'][:, 2], kpts[:, 2])  # visibility follows its keypoint
    # The packed 3D joints turned by the same 90 degrees: (x, y, z) -> (-y, x, z).
    j = loaded[0]['joints_3d']
    np.testing.assert_allclose(out['joints_3d'], np.stack([-j[:, 1], j[:, 0], j[:, 2]], -1), atol=1e-5)
    # Without a body_model the root pivots on the neutral rest pelvis: the rolled parameters pose the same body
    # turned by the same 90 degrees.
    after = _posed(body_model, out['smplx'])
    np.testing.assert_allclose(after, np.stack([-before[:, 1], before[:, 0], before[:, 2]], -1), atol=2e-4)


def _posed(model, smplx: dict) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: torch.as_tensor(np.asarray(v, np.float32))[None] for k, v in smplx.items()}).joints[0] \
            .double().numpy()


def test_the_flipped_box_mirrors_the_keypoint_extent_exactly(loaded):
    """Pixel centres sit at integers, so a W-pixel image mirrors x -> W - 1 - x: the box of the flipped keypoints
    is the keypoint box with x0' = W - 1 - x1 and x1' = W - 1 - x0 (not W - x)."""
    results = copy.deepcopy(loaded[0])
    kpts = results['keypoints_coco17']
    lab = kpts[kpts[:, 2] > 0, :2]
    results['bbox'] = np.concatenate([lab.min(0), lab.max(0)]).astype(np.float32)  # the keypoint extent
    w = int(results['img_shape_full'][1])
    out = TRANSFORMS.build(dict(type='HMRRandomFlip', prob=1.0))(results)
    flipped = out['keypoints_coco17'][out['keypoints_coco17'][:, 2] > 0, :2]
    np.testing.assert_allclose(out['bbox'], np.concatenate([flipped.min(0), flipped.max(0)]), atol=1e-4)
    x0, x1 = lab[:, 0].min(), lab[:, 0].max()
    np.testing.assert_allclose(out['bbox'][[0, 2]], [w - 1 - x1, w - 1 - x0], atol=1e-4)
    # the image pixel under a keypoint column moves to column W - 1 - x
    col = int(round(x0))
    np.testing.assert_array_equal(out['img'][:, w - 1 - col], loaded[0]['img'][:, col])


@pytest.mark.parametrize('box_wh,crop_wh', [((60.0, 150.0), (112.5, 150.0)),   # tall: widened to 3:4
                                            ((150.0, 60.0), (150.0, 200.0)),   # wide (a person lying): made taller
                                            ((90.0, 100.0), (90.0, 120.0)),   # a little wider than 3:4
                                            ((75.0, 100.0), (75.0, 100.0))])  # already 3:4
def test_the_crop_is_the_smallest_box_of_the_input_aspect_holding_the_person(loaded, box_wh, crop_wh):
    """By hand: the crop keeps the box's centre and its longer side relative to the input's 3:4 aspect and widens
    the other; its corner c - s/2 maps to crop pixel 0 and c + s/2 to the input size."""
    results = copy.deepcopy(loaded[0])
    results['bbox_center'], results['bbox_scale'] = np.array([90.0, 70.0], np.float32), np.array(box_wh, np.float32)
    out = TRANSFORMS.build(dict(type='HMRTopdownAffine', input_size=(96, 128)))(results)
    np.testing.assert_allclose(out['bbox_scale'], crop_wh, rtol=1e-6)
    lo, hi = np.array([90.0, 70.0]) - np.array(crop_wh) / 2, np.array([90.0, 70.0]) + np.array(crop_wh) / 2
    np.testing.assert_allclose(out['bbox'], np.concatenate([lo, hi]), rtol=1e-6)
    trans = out['crop_trans'].astype(np.float64)
    np.testing.assert_allclose(lo @ trans[:, :2].T + trans[:, 2], [0.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(hi @ trans[:, :2].T + trans[:, 2], [96.0, 128.0], atol=1e-4)
