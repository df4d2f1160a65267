"""Inputs that used to be misread silently: 1-D parameters, the sample's gender, AMASS frame rates and empty
sequences, symlinked directories under a data root, and stand-in files a killed run left behind."""
import logging
import os

import numpy as np
import pytest
import torch

from posedreamer_mm.body.body_model import BodyModelFileError, SMPLXBodyModel
from posedreamer_mm.body.gendered import GenderedSMPLXBodyModel
from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.body.sources import AMASSSource, PoseDreamerLabelSource
from posedreamer_mm.body.standin import ensure_standin_smplx
from posedreamer_mm.registry import BODY_MODELS
from posedreamer_mm.testing import body_fixtures as fx


@pytest.fixture(scope='module')
def neutral(gendered_dir):
    return SMPLXBodyModel(gendered_dir)


def test_one_dimensional_parameters_are_one_body(neutral):
    # Before: betas=np.zeros(10) returned 10 bodies with one beta each.
    betas = np.linspace(-1, 1, 10)
    one = neutral(betas=betas, body_pose=np.full(63, 0.1))
    assert one.vertices.shape[0] == 1
    ref = neutral(betas=betas[None], body_pose=np.full((1, 63), 0.1))
    torch.testing.assert_close(one.vertices, ref.vertices)
    with pytest.raises(ValueError, match='NaN'):
        neutral(betas=np.full(10, np.nan))
    with pytest.raises(ValueError, match='scalar'):
        neutral(transl=np.float32(1.0))


def test_the_sample_gender_selects_the_model(gendered_dir):
    samples = [BodySample(id=f's{i}', gender=g, transl=[0, 0, 3])
               for i, g in enumerate(('male', 'female', 'neutral', 'male'))]
    model = BODY_MODELS.build(dict(type='GenderedSMPLXBodyModel', model_path=str(gendered_dir),
                                   genders=('male', 'female')))
    out = model.forward_samples(samples)
    for i, s in enumerate(samples):
        alone = SMPLXBodyModel(gendered_dir, gender=s.gender)(**BodySample.stack([s]))
        torch.testing.assert_close(out.vertices[i], alone.vertices[0])
    heights = out.vertices[:, :, 1].amax(1) - out.vertices[:, :, 1].amin(1)
    assert heights[0] > heights[2] > heights[1]  # male > neutral > female: not all neutral
    np.testing.assert_array_equal(model.faces, SMPLXBodyModel(gendered_dir).faces)


def test_a_missing_gender_file_is_named(tmp_path, gendered_dir):
    os.symlink(gendered_dir / 'SMPLX_NEUTRAL.npz', tmp_path / 'SMPLX_NEUTRAL.npz')
    model = GenderedSMPLXBodyModel(tmp_path)
    with pytest.raises(BodyModelFileError, match='SMPLX_MALE.npz'):
        model.forward_samples([BodySample(id='m', gender='male')])
    with pytest.raises(BodyModelFileError, match='SMPLX_FEMALE.npz'):
        GenderedSMPLXBodyModel(tmp_path, genders=('neutral', 'female'))
    # One file holds one gender: the set has that one, another gender is refused naming the file.
    single = GenderedSMPLXBodyModel(gendered_dir / 'SMPLX_FEMALE.npz')
    assert single.default_gender == 'female' and single.default.gender == 'female'
    with pytest.raises(ValueError, match='a male body, but model_path is the file .*SMPLX_FEMALE.npz'):
        single.model('male')


def test_ensure_standin_rewrites_a_truncated_file(tmp_path, gendered_dir):
    good = (gendered_dir / 'SMPLX_MALE.npz').read_bytes()
    (tmp_path / 'SMPLX_MALE.npz').write_bytes(good[:len(good) // 3])  # what an in-place write killed midway left
    path = ensure_standin_smplx(tmp_path, ['male'])['male']
    assert path.read_bytes() == good
    mtime = path.stat().st_mtime_ns
    ensure_standin_smplx(tmp_path, ['male'])  # a good file is kept
    assert path.stat().st_mtime_ns == mtime


def test_amass_bad_frame_rates_and_empty_sequences_are_counted(tmp_path):
    bodies = fx.reference_bodies(num=3)
    fx.write_amass(str(tmp_path / 'good_stageii.npz'), bodies)
    fx.write_amass(str(tmp_path / 'inf_stageii.npz'), bodies, mocap_frame_rate=np.array(np.inf))
    fx.write_amass(str(tmp_path / 'zero_fps_stageii.npz'), bodies, mocap_frame_rate=np.array(0.0))
    fx.write_amass(str(tmp_path / 'empty_stageii.npz'), bodies,
                   **{k: np.zeros((0, n)) for k, n in (('root_orient', 3), ('pose_body', 63), ('pose_hand', 90),
                                                       ('pose_jaw', 3), ('pose_eye', 6), ('trans', 3))})
    for kwargs in (dict(subsample=1), dict(target_fps=30)):
        src = AMASSSource(str(tmp_path), **kwargs)
        reasons = {os.path.basename(f): r for f, r in src.skipped}
        assert len(src) == (3 if 'subsample' in kwargs else 1)
        assert set(reasons) == {'inf_stageii.npz', 'zero_fps_stageii.npz', 'empty_stageii.npz'}, reasons
        assert 'finite frame rate' in reasons['inf_stageii.npz'] and 'no frames' in reasons['empty_stageii.npz']


def test_symlinked_directories_are_not_followed(tmp_path, caplog):
    bodies = fx.reference_bodies(num=3)
    root = tmp_path / 'labels'
    fx.write_posedreamer(str(root / 'real'), bodies)
    os.symlink('.', root / 'loop')  # before: 3 files became 123 samples
    os.symlink(root / 'real', root / 'alias')  # before: every file twice, under other ids
    os.symlink(root / 'real' / sorted(os.listdir(root / 'real'))[0], root / 'file_alias.npz')
    with caplog.at_level(logging.WARNING):
        src = PoseDreamerLabelSource(str(root))
    assert len(src) == 3 and not src.skipped
    assert len({s.id for s in src}) == 3
