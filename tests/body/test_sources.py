"""Pose sources: one body in three formats, skip accounting, stable ids, procedural limits, augmentation."""
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from posedreamer_mm.body.camera import split_heading
from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.body.sources import (
    AMASSSource,
    AugmentedSource,
    BEDLAMSource,
    BodyAugment,
    NoValidSamplesError,
    PoseDreamerLabelSource,
    ProceduralPoseSource,
    body_pose_to_euler,
)
from posedreamer_mm.body.sources import base as sources_base
from posedreamer_mm.body.sources.procedural import limits_array
from posedreamer_mm.registry import POSE_SOURCES
from posedreamer_mm.testing import body_fixtures as fx

ATOL = 1e-5


def assert_params_equal(a: BodySample, b: BodySample):
    for name in fx.PARAM_FIELDS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=ATOL, err_msg=name)


@pytest.fixture
def bodies():
    return fx.reference_bodies(num=3)


@pytest.fixture
def warnings_log(monkeypatch):
    """Captures the sources' print_log calls as (level, message)."""
    calls = []
    monkeypatch.setattr(sources_base, 'print_log', lambda msg, logger=None, level=logging.INFO:
                        calls.append((level, msg)))
    return calls


# --- one body, three formats --------------------------------------------------------------------------------------
@pytest.mark.parametrize('fmt', ['npz', 'json', 'pkl'])
def test_same_body_parses_identically_in_all_formats(tmp_path, bodies, fmt):
    # The reference has 10 betas; AMASS (16) and BEDLAM (11) are truncated to it explicitly here (their default
    # keeps the file's count: test_default_betas_keep_the_files_count).
    amass = AMASSSource(files=fx.write_amass(str(tmp_path / 'amass' / 'seq_stageii.npz'), bodies, gender='neutral'),
                        subsample=1, num_betas=10)
    bedlam = BEDLAMSource(fx.write_bedlam(str(tmp_path / 'bedlam.npz'), bodies), img_size=fx.IMG_SIZE, num_betas=10)
    assert not amass.skipped and not bedlam.skipped  # BEDLAM's extra keys (pickled motion_info, ...) are not read
    fx.write_posedreamer(str(tmp_path / 'pd'), bodies, fmt=fmt)
    pd = PoseDreamerLabelSource(str(tmp_path / 'pd'))
    assert len(amass) == len(bedlam) == len(pd) == 3
    for i in range(3):
        for sample in (amass[i], bedlam[i], pd[i]):
            sample.validate()
            assert sample.gender == 'neutral'
            for name in fx.PARAM_FIELDS:
                np.testing.assert_allclose(getattr(sample, name), fx.reference_bodies(3)[name][i], atol=ATOL,
                                           err_msg=f'{sample.source} {name}')
        assert_params_equal(amass[i], bedlam[i])
        assert_params_equal(bedlam[i], pd[i])
    assert {amass[0].source, bedlam[0].source, pd[0].source} == {'amass', 'bedlam', 'posedreamer'}


def test_amass_conversion_keeps_pose_and_places_pelvis(tmp_path, bodies):
    path = fx.write_amass(str(tmp_path / 'a.npz'), bodies, gender='male')
    src = AMASSSource(files=path, subsample=2, camera=dict(distance=5.0, offset=(0.1, -0.2)))  # gender from file
    assert len(src) == 2 and [s.meta['frame'] for s in src] == [0, 2]
    sample = src[1]
    assert sample.gender == 'male' and sample.num_betas == 16 and sample.meta['mocap_fps'] == 120.0
    with np.load(path) as raw:
        np.testing.assert_array_equal(sample.betas, raw['betas'].astype(np.float32))  # all 16, unchanged
        np.testing.assert_array_equal(AMASSSource(files=path, num_betas=10)[0].betas,
                                      raw['betas'][:10].astype(np.float32))
    np.testing.assert_allclose(sample.body_pose, bodies['body_pose'][2], atol=ATOL)
    np.testing.assert_allclose(sample.transl + fx.PELVIS_REST, [0.1, -0.2, 5.0], atol=ATOL)
    with np.load(path) as raw:
        np.testing.assert_allclose(sample.meta['trans_world'], raw['trans'][2], atol=ATOL)
    assert AMASSSource(files=path, num_betas=16)[0].betas.shape == (16,)
    np.testing.assert_allclose(AMASSSource(files=path, num_betas=20)[0].betas[16:], 0)  # zero-padded


def test_bedlam_translation_convention(tmp_path, bodies):
    with_ext = BEDLAMSource(fx.write_bedlam(str(tmp_path / 'ext.npz'), bodies), img_size=fx.IMG_SIZE)
    no_ext = BEDLAMSource(fx.write_bedlam(str(tmp_path / 'plain.npz'), bodies, with_cam_ext=False),
                          img_size=fx.IMG_SIZE)
    with np.load(tmp_path / 'ext.npz') as raw:
        trans_cam, cam_ext = raw['trans_cam'], raw['cam_ext']
    np.testing.assert_allclose(with_ext[1].transl, trans_cam[1] + cam_ext[1, :3, 3], atol=ATOL)
    assert not np.allclose(trans_cam[1], bodies['transl'][1])  # the fixture really splits the translation
    for i in range(3):
        assert_params_equal(with_ext[i], no_ext[i])
    sample = with_ext[2]
    assert sample.meta['imgname'] == 'png/seq_000002.png' and sample.meta['row'] == 2
    assert sample.joints_2d is None  # keypoints are opt-in
    kept = BEDLAMSource(str(tmp_path / 'ext.npz'), num_betas=11, load_keypoints=True)
    assert kept[0].betas.shape == (11,) and kept[0].joints_2d.shape == (127, 2)
    assert kept[0].img_size.tolist() == [1024, 1024]  # inferred: 2 * princpt of the fixture's 1024x1024 camera
    assert BEDLAMSource(str(tmp_path / 'ext.npz'), img_size=(1280, 720))[0].img_size.tolist() == [1280, 720]


def test_registry_builds_every_source(tmp_path, bodies):
    fx.write_posedreamer(str(tmp_path / 'pd'), bodies)
    cfgs = [dict(type='AMASSSource', files=fx.write_amass(str(tmp_path / 'a.npz'), bodies)),
            dict(type='BEDLAMSource', label_file=fx.write_bedlam(str(tmp_path / 'b.npz'), bodies)),
            dict(type='PoseDreamerLabelSource', label_dir=str(tmp_path / 'pd')),
            dict(type='ProceduralPoseSource', num_samples=2),
            dict(type='AugmentedSource', source=dict(type='ProceduralPoseSource', num_samples=2), repeats=2)]
    for cfg in cfgs:
        src = POSE_SOURCES.build(cfg)
        assert len(src) > 0 and isinstance(next(iter(src)), BodySample), cfg['type']


def test_default_betas_keep_the_files_count(tmp_path, bodies):
    """docs/conventions.md: the betas count stays with the data (AMASS N/G: 16; BEDLAM: 11, the 11th an ordinary
    component)."""
    amass_path = fx.write_amass(str(tmp_path / 'a.npz'), bodies)
    bedlam_path = fx.write_bedlam(str(tmp_path / 'b.npz'), bodies)
    with np.load(amass_path) as raw:
        np.testing.assert_array_equal(AMASSSource(files=amass_path)[0].betas, raw['betas'].astype(np.float32))
    with np.load(bedlam_path, allow_pickle=True) as raw:
        shape = raw['shape'].astype(np.float32)
    assert shape[:, 10].any()  # the fixture's 11th component is not zero, so dropping it would show
    for row, sample in enumerate(BEDLAMSource(bedlam_path)):
        np.testing.assert_array_equal(sample.betas, shape[row])
    np.testing.assert_array_equal(BEDLAMSource(bedlam_path, num_betas=12)[0].betas, np.append(shape[0], 0))


def test_bedlam_reads_only_the_keys_it_needs(tmp_path, bodies):
    path = fx.write_bedlam(str(tmp_path / 'scene.npz'), bodies)
    with np.load(path, allow_pickle=False) as npz, pytest.raises(ValueError, match='Object arrays'):
        npz['motion_info']  # the fixture really holds a pickled object array, like the released labels
    src = BEDLAMSource(path, load_keypoints=True)
    assert len(src) == 3 and not src.skipped
    ragged = np.empty(3, dtype=object)
    ragged[:] = [np.zeros(165), np.zeros(165), np.zeros(160)]
    fx.write_bedlam(str(tmp_path / 'bad' / 'ragged.npz'), bodies, pose_cam=ragged)
    from fractions import Fraction
    fx.write_bedlam(str(tmp_path / 'bad' / 'code.npz'), bodies, trans_cam=np.array([Fraction(1, 2)] * 3, object))
    fx.write_bedlam(str(tmp_path / 'bad' / 'good.npz'), bodies)
    bad = BEDLAMSource(data_root=str(tmp_path / 'bad'))
    reasons = {Path(f).name: r for f, r in bad.skipped}
    assert len(bad) == 3 and set(reasons) == {'ragged.npz', 'code.npz'}
    assert "'pose_cam'" in reasons['ragged.npz']  # the message names the key
    assert "'trans_cam'" in reasons['code.npz'] and 'refusing to load fractions.Fraction' in reasons['code.npz']


def test_bedlam_is_neutral_and_keeps_the_subject_gender(tmp_path, bodies):
    src = BEDLAMSource(fx.write_bedlam(str(tmp_path / 'b.npz'), bodies))
    assert [s.gender for s in src] == ['neutral'] * 3
    assert [s.meta['subject_gender'] for s in src] == ['female', 'male', 'female']
    with pytest.raises(ValueError, match="subject_gender"):
        BEDLAMSource(str(tmp_path / 'b.npz'), gender='from_file')


def test_bedlam_img_size_from_the_principal_point(tmp_path, bodies, warnings_log):
    bodies['princpt'][1] = (360.0, 640.0)  # a rotated closeup frame: 720x1280
    path = fx.write_bedlam(str(tmp_path / 'b.npz'), bodies)
    assert [s.img_size.tolist() for s in BEDLAMSource(path)] == [[1024, 1024], [720, 1280], [1024, 1024]]
    assert not [m for level, m in warnings_log if level == logging.WARNING]
    given = BEDLAMSource(path, img_size=(1024, 1024))
    assert [s.img_size.tolist() for s in given] == [[1024, 1024]] * 3  # a given size is used as given
    warned = [m for level, m in warnings_log if level == logging.WARNING]
    assert len(warned) == 1 and 'b.npz' in warned[0] and '(720.0, 1280.0)' in warned[0] and 'row 1' in warned[0]


@pytest.mark.parametrize('stored', [np.array('male'), np.array(b'male'), np.array('male', dtype=object),
                                    np.array(['male'], dtype=object)])
def test_amass_gender_from_file_in_every_stored_form(tmp_path, bodies, stored):
    src = AMASSSource(files=fx.write_amass(str(tmp_path / 'a.npz'), bodies, gender=stored))
    assert src[0].gender == 'male' and not src.skipped
    assert AMASSSource(files=str(tmp_path / 'a.npz'), gender='neutral')[0].gender == 'neutral'  # override


def test_amass_gender_problems_name_the_key(tmp_path, bodies):
    root = tmp_path / 'amass'
    fx.write_amass(str(root / 'good.npz'), bodies)
    fx.write_amass(str(root / 'odd.npz'), bodies, gender=np.array('unknown'))
    fx.without(fx.write_amass(str(tmp_path / 'tmp.npz'), bodies), 'gender', str(root / 'none.npz'))
    from fractions import Fraction
    fx.write_amass(str(root / 'code.npz'), bodies, gender=np.array(Fraction(1, 2), dtype=object))
    src = AMASSSource(str(root))
    reasons = {Path(f).name: r for f, r in src.skipped}
    assert set(reasons) == {'odd.npz', 'none.npz', 'code.npz'}
    assert "'gender' is 'unknown'" in reasons['odd.npz'] and "no 'gender' key" in reasons['none.npz']
    assert "'gender'" in reasons['code.npz'] and 'refusing' in reasons['code.npz']
    assert len(AMASSSource(str(root), gender='female')) == 4  # an explicit gender needs no gender key (4 x frame 0)


def test_amass_target_fps(tmp_path):
    long = fx.reference_bodies(12)
    path = fx.write_amass(str(tmp_path / 'a.npz'), long)  # 12 frames at 120 fps
    assert [s.meta['frame'] for s in AMASSSource(files=path, target_fps=40)] == [0, 3, 6, 9]
    assert [s.meta['frame'] for s in AMASSSource(files=path, target_fps=50)] == [0, 2, 5, 7, 10]  # nearest frames
    old = fx.without(fx.write_amass(str(tmp_path / 'tmp.npz'), long, mocap_framerate=np.array(60.0)),
                     'mocap_frame_rate', str(tmp_path / 'old' / 'a.npz'))  # the older key name
    assert [s.meta['frame'] for s in AMASSSource(files=old, target_fps=20)] == [0, 3, 6, 9]
    fx.without(path, 'mocap_frame_rate', str(tmp_path / 'nofps' / 'a.npz'))
    with pytest.raises(NoValidSamplesError, match='mocap_frame_rate'):
        AMASSSource(str(tmp_path / 'nofps'), target_fps=30)
    with pytest.raises(NoValidSamplesError, match='below target_fps 240'):
        AMASSSource(files=path, target_fps=240)
    with pytest.raises(ValueError, match='not both'):
        AMASSSource(files=path, subsample=2, target_fps=30)
    assert 'target_fps 40' in AMASSSource(files=path, target_fps=40).summary()


@pytest.mark.parametrize('module, name', [('amass', 'check_array'), ('bedlam', 'check_array'),
                                          ('posedreamer', 'parse_label')])
def test_programming_errors_are_not_reported_as_bad_files(tmp_path, bodies, monkeypatch, module, name):
    import importlib
    mod = importlib.import_module(f'posedreamer_mm.body.sources.{module}')

    def broken(*args, **kwargs):
        raise TypeError('a bug, not a bad file')
    monkeypatch.setattr(mod, name, broken)
    fx.write_posedreamer(str(tmp_path / 'pd'), bodies)
    build = dict(amass=lambda: AMASSSource(files=fx.write_amass(str(tmp_path / 'a.npz'), bodies)),
                 bedlam=lambda: BEDLAMSource(fx.write_bedlam(str(tmp_path / 'b.npz'), bodies)),
                 posedreamer=lambda: PoseDreamerLabelSource(str(tmp_path / 'pd')))[module]
    with pytest.raises(TypeError, match='a bug'):
        build()


def test_records_meet_the_body_model_with_one_clear_error(tmp_path, bodies, standin_model_dir):
    import torch

    from posedreamer_mm.body import SMPLXBodyModel
    sample = AMASSSource(files=fx.write_amass(str(tmp_path / 'a.npz'), bodies))[0]
    assert sample.num_betas == 16
    with pytest.raises(ValueError) as err:
        SMPLXBodyModel(standin_model_dir)(**BodySample.stack([sample]))
    msg = str(err.value)
    assert 'betas has 16 components' in msg and 'num_betas=10' in msg and 'with num_betas=16' in msg
    model = SMPLXBodyModel(standin_model_dir, num_betas=16)
    out16 = model(**BodySample.stack([sample]))
    truncated = sample.copy()
    truncated.betas = sample.betas[:10]
    padded = model(**BodySample.stack([truncated]))  # fewer betas: zero-padded, exactly the 10-beta body
    ten = SMPLXBodyModel(standin_model_dir)(**BodySample.stack([truncated]))
    torch.testing.assert_close(padded.vertices, ten.vertices)
    assert (out16.vertices - padded.vertices).abs().max() > 1e-4  # components 10-15 do change the body


# --- corrupt files ------------------------------------------------------------------------------------------------
def test_amass_skips_and_counts_bad_files(tmp_path, bodies, warnings_log):
    root = tmp_path / 'amass'
    good = fx.write_amass(str(root / 'subj1' / 'good_stageii.npz'), bodies)
    fx.write_amass(str(root / 'subj2' / 'good_stageii.npz'), bodies, seed=5)
    fx.write_truncated(str(root / 'subj3' / 'truncated_stageii.npz'), good)
    fx.without(good, 'pose_hand', str(root / 'subj3' / 'nohands_stageii.npz'))
    fx.write_amass(str(root / 'subj3' / 'nan_stageii.npz'), bodies, pose_body=np.full((3, 63), np.nan))
    partial = bodies['body_pose'].copy()
    partial[1, 5] = np.nan
    fx.write_amass(str(root / 'subj3' / 'partial_stageii.npz'), bodies, pose_body=partial)
    fx.write_amass(str(root / 'subj3' / 'short_stageii.npz'), bodies, pose_body=np.zeros((3, 60)))
    fx.write_amass(str(root / 'subj3' / 'smplh_stageii.npz'), bodies, surface_model_type=np.array('smplh'))
    np.savez(root / 'subj1' / 'shape.npz', betas=np.zeros(16))  # documented non-sequence file: excluded
    src = AMASSSource(str(root), subsample=1)
    assert len(src) == 3 + 3 + 2
    reasons = {Path(f).name: r for f, r in src.skipped}
    assert set(reasons) == {'truncated_stageii.npz', 'nohands_stageii.npz', 'nan_stageii.npz',
                            'partial_stageii.npz', 'short_stageii.npz', 'smplh_stageii.npz'}
    assert 'unreadable' in reasons['truncated_stageii.npz']
    assert "'pose_hand'" in reasons['nohands_stageii.npz']
    assert 'NaN' in reasons['nan_stageii.npz'] and '1/3 frames' in reasons['partial_stageii.npz']
    assert '(3, 60)' in reasons['short_stageii.npz'] and 'smplh' in reasons['smplh_stageii.npz']
    assert [s.meta['frame'] for s in src if 'partial' in s.meta['file']] == [0, 2]
    warned = [m for level, m in warnings_log if level == logging.WARNING]
    assert len(warned) == 6 and any('truncated_stageii.npz' in m for m in warned)
    assert 'skipped 6' in src.summary()


def test_bedlam_drops_bad_rows_and_files(tmp_path, bodies):
    pose_cam_nan = np.zeros((3, 165))
    pose_cam_nan[1, 70] = np.nan
    good = fx.write_bedlam(str(tmp_path / 'labels' / 'scene_a.npz'), bodies)
    fx.write_bedlam(str(tmp_path / 'labels' / 'scene_b.npz'), bodies, pose_cam=pose_cam_nan)
    fx.write_truncated(str(tmp_path / 'labels' / 'scene_c.npz'), good)
    fx.without(good, 'cam_int', str(tmp_path / 'labels' / 'scene_d.npz'))
    src = BEDLAMSource(data_root=str(tmp_path / 'labels'))
    assert len(src) == 3 + 2
    assert [Path(f).name for f, _ in src.skipped] == ['scene_b.npz', 'scene_c.npz', 'scene_d.npz']
    assert 'row 1' in src.skipped[0][1] and "'cam_int'" in src.skipped[2][1]


def test_posedreamer_skips_bad_files(tmp_path, bodies):
    label_dir = tmp_path / 'labels'
    paths = fx.write_posedreamer(str(label_dir), bodies)
    fx.write_truncated(str(label_dir / 'bad_truncated.npz'), paths[0])
    fx.without(paths[0], 'transl', str(label_dir / 'bad_missing.npz'))
    fx.write_posedreamer(str(label_dir / 'nan'), fx.reference_bodies(1), body_pose=np.full(63, np.nan))
    fx.write_posedreamer(str(label_dir / 'shape'), fx.reference_bodies(1), left_hand_pose=np.zeros(12))
    (label_dir / 'broken.json').write_text('{"betas": [0, 1')
    src = PoseDreamerLabelSource(str(label_dir))
    assert len(src) == 3
    reasons = {os.path.relpath(f, label_dir): r for f, r in src.skipped}
    assert set(reasons) == {'bad_truncated.npz', 'bad_missing.npz', 'nan/sample_00000.npz',
                            'shape/sample_00000.npz', 'broken.json'}
    assert "'transl'" in reasons['bad_missing.npz'] and 'NaN' in reasons['nan/sample_00000.npz']
    assert "'left_hand_pose'" in reasons['shape/sample_00000.npz']
    sample = src[0]
    assert sample.img_size.tolist() == [1024, 1024] and sample.joints_3d.shape == (127, 3)
    assert sample.meta['markers_2d'].shape == (67, 2) and sample.bbox.tolist() == [100, 50, 300, 700]


@pytest.mark.parametrize('make', [
    lambda d: AMASSSource(str(d)), lambda d: BEDLAMSource(data_root=str(d)),
    lambda d: PoseDreamerLabelSource(str(d))])
def test_directory_without_valid_files_raises_one_clear_error(tmp_path, make):
    (tmp_path / 'junk.npz').write_bytes(b'not a zip')
    with pytest.raises(NoValidSamplesError) as err:
        make(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and 'expected' in message and 'npz' in message
    assert 'junk.npz' in message and 'Skipped 1' in message


def test_missing_directory_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere'):
        AMASSSource(str(tmp_path / 'nowhere'))


# --- ids ----------------------------------------------------------------------------------------------------------
def test_ids_are_stable_unique_and_order_independent(tmp_path, bodies):
    root = tmp_path / 'amass'
    files = [fx.write_amass(str(root / name / 'seq_stageii.npz'), bodies) for name in ('b', 'a', 'c')]
    first = {s.id: s.meta['file'] for s in AMASSSource(str(root), subsample=1)}
    again = {s.id: s.meta['file'] for s in AMASSSource(str(root), subsample=1)}
    reordered = {s.id: s.meta['file'] for s in AMASSSource(str(root), files=files[::-1], subsample=1)}
    assert first == again == reordered and len(first) == 9
    assert next(iter(AMASSSource(str(root), subsample=2))).id in first  # subsampling keeps frame ids
    with pytest.raises(ValueError, match='basenames'):
        AMASSSource(files=files)  # same basenames and no data_root: ids would collide
    fx.write_posedreamer(str(tmp_path / 'pd'), bodies, id=np.array('gen_000123'))
    fx.write_posedreamer(str(tmp_path / 'pd2'), fx.reference_bodies(2))
    assert len({s.id for s in PoseDreamerLabelSource(str(tmp_path / 'pd2'))}) == 2
    dup = PoseDreamerLabelSource(str(tmp_path / 'pd'))  # three files claim one id: two are skipped
    assert [s.id for s in dup] == ['gen_000123'] and len(dup.skipped) == 2


# --- procedural ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('sampling', ['uniform', 'truncnorm'])
def test_procedural_respects_limits_and_is_deterministic(sampling):
    src = ProceduralPoseSource(200, seed=7, sampling=sampling)
    poses = np.stack([s.body_pose for s in src])
    euler = body_pose_to_euler(poses)
    limits = limits_array()
    assert (euler >= limits[..., 0] - 1e-3).all() and (euler <= limits[..., 1] + 1e-3).all()
    knees = euler[:, [3, 4], 0]
    assert (knees >= -1e-3).all() and knees.max() > 60  # knees bend one way, and do bend
    assert (euler[:, 17, 1] <= 1e-3).all() and (euler[:, 18, 1] >= -1e-3).all()  # elbows one way
    again = ProceduralPoseSource(200, seed=7, sampling=sampling)
    np.testing.assert_array_equal(src[123].body_pose, again[123].body_pose)
    assert not np.allclose(src[0].body_pose, ProceduralPoseSource(1, seed=8, sampling=sampling)[0].body_pose)
    assert re.fullmatch(r'procedural_[0-9a-f]{6}_s7_00000005', src[5].id) and len({s.id for s in src}) == 200
    assert src[5].id == again[5].id
    src[0].validate()


@pytest.mark.parametrize('sampling', ['uniform', 'truncnorm'])
def test_procedural_limit_overrides(sampling):
    """A fixed axis (min == max) takes its value under both samplings (truncnorm used to raise scipy's domain
    error); the other joints keep the values the default table gives them."""
    src = ProceduralPoseSource(20, sampling=sampling, joint_limits={'left_knee': ((10, 10), (0, 0), (0, 0))})
    euler = body_pose_to_euler(np.stack([s.body_pose for s in src]))
    np.testing.assert_allclose(euler[:, 3], np.tile([10, 0, 0], (20, 1)), atol=1e-4)
    default = body_pose_to_euler(np.stack([s.body_pose for s in ProceduralPoseSource(20, sampling=sampling)]))
    others = [j for j in range(21) if j != 3]
    np.testing.assert_allclose(euler[:, others], default[:, others], atol=1e-4)
    with pytest.raises(ValueError, match='unknown joints'):
        ProceduralPoseSource(1, joint_limits={'tail': ((0, 1), (0, 1), (0, 1))})


def test_ids_encode_the_configuration():
    """Literal ids (stable across runs and machines); any change that changes the samples changes the ids."""
    base = ProceduralPoseSource(2, seed=7)
    assert base[1].id == 'procedural_c5a871_s7_00000001'
    assert ProceduralPoseSource(2, seed=7, sampling='truncnorm')[1].id == 'procedural_7f4db8_s7_00000001'
    variants = [ProceduralPoseSource(2, seed=7, sampling='truncnorm', std_fraction=0.3),
                ProceduralPoseSource(2, seed=7, joint_limits={'left_knee': ((0, 90), (-5, 5), (-5, 5))}),
                ProceduralPoseSource(2, seed=8)]
    ids = {base[1].id, ProceduralPoseSource(2, seed=7, sampling='truncnorm')[1].id, *(v[1].id for v in variants)}
    assert len(ids) == 5
    assert ProceduralPoseSource(2, seed=7, std_fraction=0.4)[1].id == base[1].id  # std unused by 'uniform'
    aug = AugmentedSource(ProceduralPoseSource(2, seed=7), seed=3)  # repeats=1: the id still changes
    assert aug[1].id == 'procedural_c5a871_s7_00000001_a744221s3r0'
    other = [AugmentedSource(ProceduralPoseSource(2, seed=7), seed=4),
             AugmentedSource(ProceduralPoseSource(2, seed=7), seed=3, yaw_range=(-30, 30)),
             AugmentedSource(ProceduralPoseSource(2, seed=7), seed=3, repeats=2)]
    assert len({aug[1].id, base[1].id, other[0][1].id, other[1][1].id, other[2][3].id}) == 5
    # Repeat 0 of repeats=2 is the very same sample as with repeats=1: same id, same parameters.
    assert other[2][2].id == aug[1].id
    assert_params_equal(other[2][2], aug[1])
    assert AugmentedSource(ProceduralPoseSource(2, seed=7), seed=3, yaw_range=[-180, 180])[1].id == aug[1].id


# --- augmentation -------------------------------------------------------------------------------------------------
def test_augment_is_deterministic_per_id_and_seed():
    base = list(ProceduralPoseSource(6, seed=1))
    aug = BodyAugment(seed=3)
    forward = [aug(s) for s in base]
    backward = [BodyAugment(seed=3)(s) for s in base[::-1]][::-1]
    for a, b in zip(forward, backward):
        assert_params_equal(a, b)
    other = BodyAugment(seed=4)(base[0])
    assert not np.allclose(other.betas, forward[0].betas)
    assert base[0].meta.get('augment') is None  # the input is not modified


def test_augment_keeps_pose_and_places_camera():
    base = list(ProceduralPoseSource(50, seed=2))
    src = AugmentedSource(ProceduralPoseSource(50, seed=2), seed=0, betas_range=1.5, yaw_range=(-90, 90),
                          distance_range=(3.0, 7.0), offset_range=(0.3, 0.1), focal_range=(800, 1000))
    out = list(src)
    for b, a in zip(base, out):
        a.validate()
        for name in ('body_pose', 'left_hand_pose', 'right_hand_pose', 'jaw_pose', 'leye_pose', 'reye_pose'):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        pelvis = a.transl + fx.PELVIS_REST
        assert 3.0 - ATOL <= pelvis[2] <= 7.0 + ATOL and abs(pelvis[0]) <= 0.3 + ATOL and abs(pelvis[1]) <= 0.1 + ATOL
        assert np.abs(a.betas).max() <= 1.5 and 800 <= a.focal[0] <= 1000
        assert a.id == f'{b.id}_a{src.augment.config_digest}s0r0' and a.meta['augment']['inner_id'] == b.id
    yaws = np.rad2deg([float(split_heading(a.global_orient)[0]) for a in out])
    assert yaws.min() >= -90 - 1e-3 and yaws.max() <= 90 + 1e-3 and yaws.std() > 20
    np.testing.assert_allclose(yaws, [a.meta['augment']['yaw_deg'] for a in out], atol=1e-3)


def test_augment_keep_tilt_and_repeats():
    tilted = BodySample(id='t', global_orient=(Rotation.from_euler('x', np.pi) * Rotation.from_euler('y', 0.5)
                                               * Rotation.from_euler('x', 0.4)).as_rotvec())
    out = BodyAugment(orient_mode='keep_tilt', yaw_range=(30, 30))(tilted)
    yaw, tilt = split_heading(out.global_orient)
    assert np.isclose(np.rad2deg(float(yaw)), 30, atol=1e-4)
    np.testing.assert_allclose(Rotation.from_matrix(tilt.numpy()).as_rotvec(), [0.4, 0, 0], atol=1e-5)
    src = AugmentedSource(ProceduralPoseSource(3), repeats=4)
    ids = [s.id for s in src]
    assert len(src) == 12 and len(set(ids)) == 12
    assert ids[5] == f'{ProceduralPoseSource(3)[1].id}_a{src.augment.config_digest}s0r1'


# --- with a real SMPL-X forward (the generated stand-in) ----------------------------------------------------------
@pytest.fixture(scope='module')
def smplx_standin(standin_model_dir):
    """The consumer of the records: 16 betas (AMASS's count); records with fewer are zero-padded."""
    from posedreamer_mm.body import SMPLXBodyModel
    return SMPLXBodyModel(standin_model_dir, num_betas=16)


def forward(model, samples):
    import torch
    with torch.no_grad():
        out = model(**BodySample.stack(samples))
    return out.joints.numpy(), out.vertices.numpy()


def image_y(points, sample):
    return sample.focal[1] * points[..., 1] / points[..., 2] + sample.princpt[1]


def test_bodies_stand_upright_in_camera_frame(tmp_path, smplx_standin):
    still = fx.reference_bodies(2)
    still['body_pose'][:] = 0
    upright_world = Rotation.from_euler('x', 90, degrees=True).as_rotvec()
    amass = AMASSSource(files=fx.write_amass(str(tmp_path / 'a.npz'), still,
                                             root_orient=np.tile(upright_world, (2, 1))), subsample=1,
                        num_betas=10)  # stacked with 10-beta procedural samples below
    samples = [amass[0], ProceduralPoseSource(1)[0], *AugmentedSource(ProceduralPoseSource(4, seed=1))]
    joints, verts = forward(smplx_standin, samples)
    assert (verts[..., 2] > 0).all()  # in front of the camera
    for j, s in zip(joints, samples):
        head_y, feet_y = image_y(j[15], s), image_y(j[[7, 8]], s).max()
        assert head_y < feet_y, s.id


def test_amass_root_conversion_is_a_rigid_camera_move(tmp_path, bodies, smplx_standin):
    import torch
    path = fx.write_amass(str(tmp_path / 'a.npz'), bodies)
    cam = list(AMASSSource(files=path, subsample=1))
    with np.load(path) as raw, torch.no_grad():
        world = smplx_standin(betas=torch.tensor(raw['betas'][None]).float().expand(3, -1),
                              global_orient=torch.tensor(raw['root_orient']).float(),
                              body_pose=torch.tensor(raw['pose_body']).float(),
                              left_hand_pose=torch.tensor(raw['pose_hand'][:, :45]).float(),
                              right_hand_pose=torch.tensor(raw['pose_hand'][:, 45:]).float(),
                              jaw_pose=torch.tensor(raw['pose_jaw']).float(),
                              leye_pose=torch.tensor(raw['pose_eye'][:, :3]).float(),
                              reye_pose=torch.tensor(raw['pose_eye'][:, 3:]).float(),
                              transl=torch.tensor(raw['trans']).float(), expression=torch.zeros(3, 10))
    joints_c, verts_c = forward(smplx_standin, cam)
    rot = Rotation.from_euler('x', 90, degrees=True).as_matrix()
    rel_world = world.vertices.numpy() - world.joints.numpy()[:, :1]
    np.testing.assert_allclose(rel_world @ rot.T, verts_c - joints_c[:, :1], atol=1e-4)


def test_augment_puts_pelvis_at_requested_distance(smplx_standin):
    import torch
    zero = {k: torch.zeros(1, v.shape[1]) for k, v in BodySample.stack([BodySample(id='z')]).items()}
    with torch.no_grad():
        rest_pelvis = smplx_standin(**zero).joints[0, 0].numpy()
    src = AugmentedSource(ProceduralPoseSource(8, seed=4), betas_range=None, distance_range=(2.0, 4.0),
                          offset_range=(0.0, 0.0), pelvis_rest=rest_pelvis)
    joints, _ = forward(smplx_standin, list(src))
    assert (joints[:, 0, 2] >= 2.0 - 1e-4).all() and (joints[:, 0, 2] <= 4.0 + 1e-4).all()
    np.testing.assert_allclose(joints[:, 0, :2], 0, atol=1e-4)
    assert joints[:, 0, 2].std() > 0.1


def test_a_procedural_sample_does_not_depend_on_the_source_length():
    """Configs compute the source's length from ``num_samples``: raising it must not change the first samples."""
    from posedreamer_mm.registry import POSE_SOURCES
    short = POSE_SOURCES.build(dict(type='ProceduralPoseSource', num_samples=5, seed=2, sampling='truncnorm'))
    long = POSE_SOURCES.build(dict(type='ProceduralPoseSource', num_samples=100000, seed=2, sampling='truncnorm'))
    for i in (0, 4):
        a, b = short[i], long[i]
        assert a.id == b.id
        np.testing.assert_array_equal(a.body_pose, b.body_pose)
    assert not np.array_equal(short[0].body_pose, short[1].body_pose)
