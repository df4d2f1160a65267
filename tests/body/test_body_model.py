"""SMPLXBodyModel on the stand-in: loading, defaults, batching, keypoint geometry, and file errors."""
import logging
import shutil
import zipfile

import numpy as np
import pytest
import torch

from posedreamer_mm.body import (
    BodyModelFileError,
    SMPLXBodyModel,
    canonical_body_pose,
    project_points,
    smplx_to_coco17,
    upright_global_orient,
)
from posedreamer_mm.body.joint_maps import COCO17_NAMES
from posedreamer_mm.registry import BODY_MODELS


@pytest.fixture(scope='module')
def model(standin_model_dir):
    return SMPLXBodyModel(standin_model_dir)


def _kp(names, kpts):
    return {n: kpts[COCO17_NAMES.index(n)] for n in names}


def test_loads_from_dir_file_subfolder_and_registry(standin_model_dir, model):
    out = model()
    assert out.vertices.shape == (1, 10475, 3) and out.joints.shape == (1, 127, 3)
    assert model.faces.shape == (20908, 3) and model.faces.dtype == np.int64
    assert model.faces_tensor.shape == (20908, 3) and model.is_standin and 'NOT SMPL-X' in repr(model)
    for path in (standin_model_dir / 'SMPLX_NEUTRAL.npz', standin_model_dir / 'smplx'):
        assert SMPLXBodyModel(path).num_verts == 10475
    built = BODY_MODELS.build(dict(type='SMPLXBodyModel', model_path=str(standin_model_dir),
                                   use_face_contour=True, num_betas=16))
    assert built().joints.shape == (1, 144, 3)


def test_defaults_batching_and_shapes(model):
    b = 3
    pose = torch.randn(b, 21, 3) * 0.2
    out = model(body_pose=pose, betas=torch.zeros(b, 4))  # (B, 21, 3) pose, betas zero-padded to 10
    assert out.vertices.shape == (b, 10475, 3)
    flat = model(body_pose=pose.reshape(b, 63).numpy())  # numpy accepted
    torch.testing.assert_close(out.vertices, flat.vertices)
    shifted = model(body_pose=pose, transl=torch.tensor([[0.0, 0.0, 1.0]]).repeat(b, 1))
    torch.testing.assert_close(shifted.joints - out.joints, torch.tensor([0.0, 0.0, 1.0]).expand(b, 127, 3))
    with pytest.raises(ValueError, match='batch'):
        model(body_pose=pose, betas=torch.zeros(2, 10))
    with pytest.raises(ValueError, match='betas'):
        model(betas=torch.zeros(1, 11))
    with pytest.raises(TypeError, match='unknown'):
        model(pose=pose)


def test_betas_change_height_monotonically(model):
    betas = torch.zeros(5, 10)
    betas[:, 0] = torch.linspace(-2, 2, 5)
    v = model(betas=betas).vertices
    height = v[..., 1].amax(1) - v[..., 1].amin(1)
    assert (height.diff() > 0.02).all()


def test_front_facing_coco17_is_consistent(model):
    """T-posed stand-in 3 m in front of a 1000 px camera, upright (OpenCV frame), facing the camera."""
    orient = upright_global_orient(0.0)[None]
    rest = model().joints[0, 0]
    out = model(global_orient=orient, transl=torch.tensor([[0.0, 0.0, 3.0]]) - rest)
    uv = project_points(smplx_to_coco17(out.joints), torch.tensor([1000.0, 1000.0]), torch.tensor([512., 512.]))
    k = _kp(COCO17_NAMES, uv[0])
    y = lambda *names: torch.stack([k[n][1] for n in names]).mean()  # noqa: E731 image rows grow downwards
    assert y('nose') < y('left_shoulder', 'right_shoulder') < y('left_hip', 'right_hip') \
        < y('left_knee', 'right_knee') < y('left_ankle', 'right_ankle')
    assert k['left_wrist'][0] > k['left_elbow'][0] > k['left_shoulder'][0] > 512 > k['right_shoulder'][0] \
        > k['right_elbow'][0] > k['right_wrist'][0]  # the person's left is the image's right
    assert k['left_ear'][0] > k['left_eye'][0] > k['nose'][0] > k['right_eye'][0] > k['right_ear'][0]
    for eye in ('left_eye', 'right_eye'):
        assert 0 < (k['nose'] - k[eye]).norm() < 25 and k[eye][1] < k['nose'][1]  # eyes just above the nose
    assert abs(k['nose'][0] - 512) < 2 and (y('left_ankle') - y('nose')) > 400  # ~1.5 m tall at 3 m


def test_canonical_poses(model):
    t = model(body_pose=canonical_body_pose('T')).joints[0]
    a = model(body_pose=canonical_body_pose('A')).joints[0]
    assert a[20, 1] < a[16, 1] - 0.3 and a[21, 1] < a[17, 1] - 0.3  # wrists well below shoulders
    assert (a[10, 0] - a[11, 0]) > (t[10, 0] - t[11, 0]) + 0.05  # feet further apart
    with pytest.raises(ValueError):
        canonical_body_pose('X')


def _assert_explains(err: BodyModelFileError, *needles: str):
    msg = str(err)
    for needle in ('smpl-x.is.tue.mpg.de', 'posedreamer_mm.body.standin', *needles):
        assert needle in msg, f'{needle!r} missing from:\n{msg}'


def test_missing_file_error(tmp_path):
    with pytest.raises(BodyModelFileError) as err:
        SMPLXBodyModel(tmp_path / 'nowhere')
    _assert_explains(err.value, str(tmp_path / 'nowhere'), 'SMPLX_NEUTRAL.npz', 'v_template')
    with pytest.raises(FileNotFoundError):  # also catchable as the builtin types
        SMPLXBodyModel(tmp_path, gender='female')


def test_corrupt_zip_error(tmp_path, standin_model_dir):
    bad = tmp_path / 'SMPLX_NEUTRAL.npz'
    data = (standin_model_dir / 'SMPLX_NEUTRAL.npz').read_bytes()
    bad.write_bytes(data[:len(data) // 2])
    with pytest.raises(BodyModelFileError) as err:
        SMPLXBodyModel(tmp_path)
    _assert_explains(err.value, str(bad), 'truncated or corrupt')


def _rewrite(src, dst, drop=(), replace=None):
    with zipfile.ZipFile(src) as zf:
        arrays = {n[:-4]: np.load(zf.open(n)) for n in zf.namelist() if n[:-4] not in drop}
    arrays.update(replace or {})
    np.savez(dst, **arrays)


def test_missing_key_and_wrong_shape_errors(tmp_path, standin_model_dir):
    src = standin_model_dir / 'SMPLX_NEUTRAL.npz'
    _rewrite(src, tmp_path / 'SMPLX_NEUTRAL.npz', drop=('J_regressor',))
    with pytest.raises(BodyModelFileError) as err:
        SMPLXBodyModel(tmp_path)
    _assert_explains(err.value, str(tmp_path / 'SMPLX_NEUTRAL.npz'), "['J_regressor']")
    _rewrite(src, tmp_path / 'SMPLX_MALE.npz', replace=dict(weights=np.zeros((10475, 54), np.float32)))
    with pytest.raises(BodyModelFileError) as err:
        SMPLXBodyModel(tmp_path, gender='male')
    _assert_explains(err.value, 'weights', '(10475, 54)')
    shutil.copy(src, tmp_path / 'SMPLX_FEMALE.npz')
    with pytest.raises(BodyModelFileError, match='dynamic_lmk'):  # contour keys checked only when needed
        _rewrite(src, tmp_path / 'SMPLX_FEMALE.npz', drop=('dynamic_lmk_faces_idx',))
        SMPLXBodyModel(tmp_path, gender='female', use_face_contour=True)


def test_chumpy_pickle_error(tmp_path):
    try:
        import chumpy  # noqa: F401
        pytest.skip('chumpy is installed')
    except ImportError:
        pass
    path = tmp_path / 'SMPLX_NEUTRAL.pkl'
    path.write_bytes(b'\x80\x02cchumpy.ch\nCh\nq\x00)\x81q\x01.')  # what an official chumpy pickle references
    with pytest.raises(BodyModelFileError) as err:
        SMPLXBodyModel(tmp_path, ext='pkl')
    _assert_explains(err.value, 'chumpy-fixed', str(path))


# --- betas counts, hand conventions, genders ---------------------------------------------------------------------
def test_more_betas_than_the_model_raise_one_clear_error(model):
    with pytest.raises(ValueError) as err:
        model(betas=torch.zeros(2, 16))
    msg = str(err.value)
    assert 'betas has 16 components' in msg and 'num_betas=10' in msg
    assert 'build the body model with num_betas=16' in msg
    with pytest.raises(ValueError, match='num_expression_coeffs=12'):
        model(expression=torch.zeros(1, 12))


def test_num_betas_beyond_the_file_raises_instead_of_being_capped(tmp_path):
    from posedreamer_mm.body.standin import write_standin_smplx
    write_standin_smplx(tmp_path, num_betas=10, num_expression=10)  # a v1.0-style file: 10 + 10 components
    assert SMPLXBodyModel(tmp_path).num_betas == 10
    with pytest.raises(ValueError) as err:
        SMPLXBodyModel(tmp_path, num_betas=11)  # smplx alone would silently build a 10-beta model
    msg = str(err.value)
    assert 'num_betas=11' in msg and 'supports only 10' in msg and '20' in msg and 'num_betas=10' in msg
    with pytest.raises(ValueError, match='num_expression_coeffs=50'):
        SMPLXBodyModel(tmp_path, num_expression_coeffs=50)


def test_pca_hands(standin_model_dir, model):
    pca = SMPLXBodyModel(standin_model_dir, use_pca=True, num_pca_comps=6, flat_hand_mean=True)
    hand = torch.full((1, 6), 0.8)
    out = pca(left_hand_pose=hand, right_hand_pose=-hand)
    zero = pca()
    assert out.vertices.shape == (1, 10475, 3)
    assert (out.vertices - zero.vertices).abs().max() > 0.01  # the PCA coefficients move the fingers
    torch.testing.assert_close(zero.vertices, model().vertices)  # zero coefficients = the flat hand
    with pytest.raises(ValueError, match='left_hand_pose has 45 values per sample, expected 6'):
        pca(left_hand_pose=torch.zeros(1, 45))


def test_flat_hand_mean_changes_the_zero_hand_and_warns_once(standin_model_dir, model, monkeypatch):
    from posedreamer_mm.body import body_model as bm
    logged = []
    monkeypatch.setattr(bm, '_warned_hand_mean', False)
    monkeypatch.setattr(bm, 'print_log', lambda msg, logger=None, level=None: logged.append((level, msg)))
    curled = SMPLXBodyModel(standin_model_dir, flat_hand_mean=False)
    SMPLXBodyModel(standin_model_dir, flat_hand_mean=False)
    assert len(logged) == 1 and logged[0][0] == logging.WARNING and 'flat_hand_mean=True' in logged[0][1]
    assert 'flat_hand_mean=False' in repr(curled)
    assert (curled().vertices - model().vertices).abs().max() > 0.005  # zero pose: mean curl vs flat hand
    # Known answer: a flat-hand model posed with the file's hand mean is the curled model at zero pose.
    with np.load(standin_model_dir / 'SMPLX_NEUTRAL.npz') as data:
        mean_l, mean_r = data['hands_meanl'][None], data['hands_meanr'][None]
    torch.testing.assert_close(model(left_hand_pose=mean_l, right_hand_pose=mean_r).vertices, curled().vertices)
    SMPLXBodyModel(standin_model_dir)  # the default (True) never warns
    assert len(logged) == 1


def test_male_and_female_models(gendered_dir):
    heights = {}
    for gender in ('neutral', 'male', 'female'):
        m = SMPLXBodyModel(gendered_dir, gender=gender)
        assert m.gender == gender and m.model_file.name == f'SMPLX_{gender.upper()}.npz'
        v = m().vertices[0]
        heights[gender] = float(v[:, 1].max() - v[:, 1].min())
    assert heights['male'] > heights['neutral'] + 0.02 > heights['female'] + 0.04


def test_gender_follows_an_explicit_file_name(gendered_dir):
    assert SMPLXBodyModel(gendered_dir / 'SMPLX_MALE.npz').gender == 'male'
    assert SMPLXBodyModel(gendered_dir / 'SMPLX_FEMALE.npz', gender='female').gender == 'female'
    with pytest.raises(ValueError, match="gender='female' but model_path .*SMPLX_NEUTRAL.npz.* is the neutral"):
        SMPLXBodyModel(gendered_dir / 'SMPLX_NEUTRAL.npz', gender='female')
    assert SMPLXBodyModel(gendered_dir).gender == 'neutral'  # a directory: neutral unless asked
