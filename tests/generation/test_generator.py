"""DatasetGenerator in-process: labels equal the source's, drops/failures counted, resume, refusals, write errors."""
import json
import os

import cv2
import numpy as np
import pytest
from mmcv.transforms import BaseTransform

from posedreamer_mm.body.camera import project_points
from posedreamer_mm.body.sources.base import stable_seed
from posedreamer_mm.generation import (
    GeneratedDataReader,
    GenerationError,
    OutputConflictError,
    PromptSampler,
    ShardWriteError,
    export_coco_keypoints,
)
from posedreamer_mm.generation.transforms import drop
from posedreamer_mm.generation.writer import ShardBuilder
from posedreamer_mm.registry import GENERATORS, POSE_SOURCES, TRANSFORMS
from tests.generation.stub_backend import NoiseTestBackend

CROP = 64
SOURCE = dict(type='AugmentedSource', source=dict(type='ProceduralPoseSource', num_samples=40, seed=1), seed=3,
              distance_range=(3.0, 4.0))


def _pipeline(controls=(dict(type='PNCCRenderer'), dict(type='DepthRenderer')), crop=CROP, min_visible=0,
              prompts=dict(type='PromptSampler', preset='generic')):
    return [dict(type='BodyForward'), dict(type='BodyCropCamera', size=crop, margin=0.1),
            dict(type='RenderControls', controls=list(controls)),
            dict(type='COCO17Visibility', min_visible=min_visible), dict(type='SamplePrompt', prompts=prompts)]


def _generator(model_dir, n=6, shard_size=4, backend=None, **kw):
    cfg = dict(type='DatasetGenerator', body_model=dict(type='SMPLXBodyModel', model_path=str(model_dir)),
               source=SOURCE, pipeline=_pipeline(), backend=backend or dict(type='RenderBackend', batch_size=2),
               writer=dict(shard_size=shard_size, image_format='png'), num_samples=n, seed=7, progress=False)
    cfg.update(kw)
    return GENERATORS.build(cfg)


def _snapshot(root):
    """ids, label arrays and image bytes of a dataset, for equality across runs."""
    reader = GeneratedDataReader(root)
    out = {}
    for i, sid in enumerate(reader.ids):
        s = reader.sample(i)
        with open(reader.image_path(i), 'rb') as f:
            out[sid] = (s.to_dict(), f.read(), reader.meta(i)['prompt'])
    return out


def _assert_same(a, b):
    assert list(a) == list(b)
    for sid in a:
        la, lb = a[sid][0], b[sid][0]
        assert sorted(la) == sorted(lb)
        for key in la:
            np.testing.assert_array_equal(la[key], lb[key], err_msg=f'{sid} {key}')
        assert a[sid][1] == b[sid][1], f'{sid}: image bytes differ'
        assert a[sid][2] == b[sid][2]


def test_labels_equal_what_the_source_produced(tmp_path, standin_model_dir):
    summary = _generator(standin_model_dir).run(str(tmp_path / 'out'))
    assert summary['written'] == 6 and summary['status'] == 'complete' and summary['shards'] == 2
    assert set(summary['timings_s']) >= {'source', 'BodyForward', 'RenderControls', 'backend', 'write'}
    source = POSE_SOURCES.build(SOURCE)
    reader = GeneratedDataReader(tmp_path / 'out')
    assert reader.ids == [source[i].id for i in range(6)]
    prompts = PromptSampler('generic')
    for i in range(6):
        want, got, meta = source[i], reader.sample(i), reader.meta(i)
        for key in ('betas', 'global_orient', 'body_pose', 'left_hand_pose', 'transl', 'expression'):
            np.testing.assert_array_equal(getattr(got, key), getattr(want, key), err_msg=key)
        np.testing.assert_allclose(got.meta['source_camera']['focal'], want.focal)
        assert tuple(got.img_size) == (CROP, CROP)
        img = reader.load_image(i)
        assert img.shape == (CROP, CROP, 3) and img.dtype == np.uint8
        proj = np.asarray(project_points(got.joints_3d[None], got.focal[None], got.princpt[None]))[0]
        np.testing.assert_allclose(got.joints_2d, proj, atol=1e-3)
        # The stored bbox is the PNCC silhouette's box (within a pixel): label and control share one camera.
        pncc = cv2.imread(reader.control_path(i, 'pncc'))
        ys, xs = np.nonzero(pncc.sum(-1) > 0)
        x, y, w, h = got.bbox
        assert abs(xs.min() - x) <= 1.5 and abs(ys.max() + 1 - (y + h)) <= 1.5
        assert (got.keypoints_coco17[:, 2] > 0).sum() >= 12
        assert meta['seed'] == stable_seed(7, want.id) and meta['backend'] == 'render_baseline'
        assert meta['prompt'] == prompts(meta['seed'], want.gender)[0]
    coco_path = export_coco_keypoints(reader, tmp_path / 'coco.json')
    from pycocotools.coco import COCO
    coco = COCO(coco_path)
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]
    np.testing.assert_allclose(np.reshape(ann['keypoints'], (17, 3))[:, 2], reader.sample(0).keypoints_coco17[:, 2])
    assert os.path.isfile(os.path.join(reader.root, coco.loadImgs(1)[0]['file_name']))


def test_rerun_loses_nothing_and_another_config_is_refused(tmp_path, standin_model_dir):
    out = str(tmp_path / 'out')
    _generator(standin_model_dir, n=5, shard_size=2).run(out)
    before = _snapshot(out)
    mtimes = {p: os.stat(os.path.join(dp, p)).st_mtime_ns for dp, _, fs in os.walk(out + '/shards') for p in fs}
    again = _generator(standin_model_dir, n=5, shard_size=2).run(out)
    assert again['this_run']['written'] == 0 and again['this_run']['shards_skipped_complete'] == 3
    assert again['written'] == 5
    _assert_same(before, _snapshot(out))
    assert mtimes == {p: os.stat(os.path.join(dp, p)).st_mtime_ns for dp, _, fs in os.walk(out + '/shards')
                      for p in fs}
    with pytest.raises(OutputConflictError, match=r"different config or seed.*\['seed'\]"):
        _generator(standin_model_dir, n=5, shard_size=2, seed=8).run(out)
    with pytest.raises(OutputConflictError, match='num_samples'):
        _generator(standin_model_dir, n=4, shard_size=2).run(out)
    _assert_same(before, _snapshot(out))


class _FlakySource:
    """A source whose file vanishes for one index, with one behind-camera body and one hostile id."""

    def __init__(self):
        self.inner = POSE_SOURCES.build(SOURCE)

    def __len__(self):
        return 7

    def __getitem__(self, i):
        s = self.inner[i]
        if i == 1:
            s.transl = np.array([0, 0, -3.0], np.float32)
        if i == 2:
            raise FileNotFoundError('/data/amass/gone.npz vanished mid-run')
        if i == 3:
            s.id = '../../escape'
        if i == 4:
            s.body_pose = np.full(63, np.nan, np.float32)
        return s


def test_drops_and_failures_are_counted_with_reasons(tmp_path, standin_model_dir):
    gen = _generator(standin_model_dir, n=7, source=_FlakySource())
    summary = gen.run(str(tmp_path / 'out'))
    assert summary['written'] == 3
    assert summary['dropped'] == {'geometry_near_plane': 1, 'invalid_sample': 1}
    assert summary['failed'] == {'source:FileNotFoundError': 1, 'source:ValueError': 1}
    assert not (tmp_path / 'escape.png').exists() and not list(tmp_path.glob('**/escape*'))
    info = json.loads((tmp_path / 'out' / 'shards' / '000000' / 'shard.json').read_text())
    assert 'gone.npz vanished' in info['failed'][0]['reason']


def test_write_error_leaves_no_half_shard_and_the_rerun_completes(tmp_path, standin_model_dir, monkeypatch):
    out = str(tmp_path / 'out')
    real_add, calls = ShardBuilder.add, []

    def failing_add(self, index, results):
        calls.append(index)
        if len(calls) == 3:
            raise OSError(28, 'No space left on device')
        return real_add(self, index, results)

    monkeypatch.setattr(ShardBuilder, 'add', failing_add)
    with pytest.raises(ShardWriteError, match='No space left on device.*resumes'):
        _generator(standin_model_dir, n=6, shard_size=2).run(out)
    assert not [n for n in os.listdir(os.path.join(out, 'shards')) if n.startswith('.')]
    assert len(GeneratedDataReader(out)) == 2  # shard 0 only, complete
    monkeypatch.setattr(ShardBuilder, 'add', real_add)
    summary = _generator(standin_model_dir, n=6, shard_size=2).run(out)
    assert summary['this_run']['shards_skipped_complete'] == 1 and summary['written'] == 6
    _generator(standin_model_dir, n=6, shard_size=2).run(str(tmp_path / 'clean'))
    _assert_same(_snapshot(str(tmp_path / 'clean')), _snapshot(out))


def test_a_sample_in_a_batch_of_4_equals_it_alone(tmp_path, standin_model_dir):
    _generator(standin_model_dir, n=4, backend=NoiseTestBackend(batch_size=4)).run(str(tmp_path / 'b4'))
    _generator(standin_model_dir, n=4, backend=NoiseTestBackend(batch_size=1)).run(str(tmp_path / 'b1'))
    _assert_same(_snapshot(str(tmp_path / 'b4')), _snapshot(str(tmp_path / 'b1')))


def test_stages_after_the_backend_store_scores_and_drop_with_reasons(tmp_path, standin_model_dir):
    keep = dict(type='FilterByImageQuality', min_sharpness=None, min_brightness=None, max_brightness=None,
                max_clipped_fraction=None)
    _generator(standin_model_dir, n=3, stages=[keep]).run(str(tmp_path / 'kept'))
    reader = GeneratedDataReader(tmp_path / 'kept')
    assert len(reader) == 3 and {'sharpness', 'brightness'} <= set(reader.meta(0)['scores'])
    summary = _generator(standin_model_dir, n=3, stages=[dict(keep, min_sharpness=1e12)]).run(str(tmp_path / 'all'))
    assert summary['written'] == 0 and summary['dropped'] == {'blurry': 3} and summary['status'] == 'complete'
    assert len(GeneratedDataReader(tmp_path / 'all')) == 0  # shards with no sample are committed, and read


@pytest.mark.timeout(300)
def test_spawn_workers_write_the_same_dataset(tmp_path, standin_model_dir):
    _generator(standin_model_dir, n=4, shard_size=2).run(str(tmp_path / 'inproc'))
    # warm_start=False: every sample is prepared in the worker (a warm start would prepare the first ones here).
    _generator(standin_model_dir, n=4, shard_size=2, num_workers=1, warm_start=False).run(str(tmp_path / 'spawn'))
    _assert_same(_snapshot(str(tmp_path / 'inproc')), _snapshot(str(tmp_path / 'spawn')))


def test_bad_configs_fail_clearly(tmp_path, standin_model_dir):
    with pytest.raises(ValueError, match='owns the crop camera'):
        _generator(standin_model_dir, pipeline=_pipeline(controls=[dict(type='PNCCRenderer', size=128)]))
    with pytest.raises(ValueError, match='no registry config; remove its type'):
        _generator(standin_model_dir, writer=dict(type='ShardedDatasetWriter', shard_size=2))
    with pytest.raises(ValueError, match='num_samples=99 but the source has 40'):
        _generator(standin_model_dir, n=99)
    # The stand-in directory holds only the neutral model: a male sample stops the run, naming the file.
    gen = _generator(standin_model_dir, n=2, source=_MaleSource())
    with pytest.raises(GenerationError, match='SMPLX_MALE'):
        gen.run(str(tmp_path / 'b'))


class _MaleSource(_FlakySource):
    def __getitem__(self, i):
        s = self.inner[i]
        s.gender = 'male'
        return s


def test_gendered_amass_files_and_a_file_gone_mid_run(tmp_path, standin_model_dir):
    """Real AMASS files of a female subject are posed with the female model; a file deleted after indexing fails
    its samples (counted, with the file named) and the run completes."""
    from posedreamer_mm.body.standin import write_standin_smplx
    from posedreamer_mm.testing import body_fixtures as fx
    models = tmp_path / 'models'
    for gender in ('neutral', 'female'):
        write_standin_smplx(models, gender=gender)
    files = [fx.write_amass(str(tmp_path / f'{n}.npz'), fx.reference_bodies(3, seed=s))
             for n, s in (('a', 0), ('b', 1))]
    # One shard: a shard whose every sample failed would stop the run (test_a_shard_of_failures_stops_the_run).
    gen = _generator(models, n=6, shard_size=6,
                     body_model=dict(type='SMPLXBodyModel', model_path=str(models), num_betas=16),
                     source=dict(type='AugmentedSource', source=dict(type='AMASSSource', files=files, subsample=1),
                                 seed=0, distance_range=(3.0, 4.0)))
    os.remove(files[1])
    summary = gen.run(str(tmp_path / 'out'))
    assert summary['written'] == 3 and summary['failed'] == {'source:FileNotFoundError': 3}
    reader = GeneratedDataReader(tmp_path / 'out')
    assert {reader.sample(i).gender for i in range(3)} == {'female'}
    info = json.loads((tmp_path / 'out' / 'shards' / '000000' / 'shard.json').read_text())
    assert 'b.npz' in info['failed'][0]['reason']


# --- a broken configuration never becomes a "complete" dataset (issue 16 §5) ------------------------------------
def test_a_filter_without_its_scorer_is_refused_when_built(standin_model_dir):
    """FilterByOKS reads ScorePose's match; inside the generator no stored scores exist, so without ScorePose it
    failed every sample. It is refused before the first sample, naming the stage and the missing key."""
    with pytest.raises(ValueError, match=r"stages\[0\] \(FilterByOKS\) needs results keys \['pose_match'\]"):
        _generator(standin_model_dir, stages=[dict(type='FilterByOKS', thr=0.5)])
    with pytest.raises(ValueError, match=r"stages\[1\] \(FilterByHeadPose\) needs .*'pose_detections'"):
        _generator(standin_model_dir, stages=[dict(type='FilterByImageQuality'), dict(type='FilterByHeadPose')])
    # A step before the one that adds its input is refused the same way (RenderControls before BodyForward).
    pipeline = _pipeline()
    pipeline[0], pipeline[2] = pipeline[2], pipeline[0]
    with pytest.raises(ValueError, match=r"pipeline\[0\] \(RenderControls\) needs results keys \['faces', 'joints'"):
        _generator(standin_model_dir, pipeline=pipeline)


class _FailsSome:
    """A stage raising for the indices ``fails(index)`` (a broken scorer, a bad config value)."""

    def __init__(self, fails):
        self.fails = fails

    def __call__(self, results):
        if self.fails(results['index']):
            raise RuntimeError(f'stage broke on index {results["index"]}')
        return results


def test_a_shard_whose_samples_all_fail_stops_the_run_with_the_first_traceback(tmp_path, standin_model_dir):
    out = str(tmp_path / 'out')
    gen = _generator(standin_model_dir, n=6, stages=[_FailsSome(lambda i: True)])
    for _ in range(2):  # and the re-run does not skip it as complete: it fails again
        with pytest.raises(GenerationError, match=r'(?s)every sample of shard 0 .*Traceback.*stage broke on index 0'):
            gen.run(out)
        manifest = json.loads(open(os.path.join(out, 'manifest.json')).read())
        assert manifest['status'] == 'in_progress' and not os.path.exists(os.path.join(out, 'summary.json'))
        assert os.listdir(os.path.join(out, 'shards')) == []


def test_more_failures_than_the_bound_stop_the_run(tmp_path, standin_model_dir):
    out = str(tmp_path / 'out')
    gen = _generator(standin_model_dir, n=8, stages=[_FailsSome(lambda i: i % 4 != 0)], max_failure_rate=0.5,
                     failure_rate_min_samples=4)
    with pytest.raises(GenerationError, match=r'(?s)3 of 4 samples failed, more than max_failure_rate=0\.5.*'
                                              r'Traceback.*stage broke on index 1'):
        gen.run(out)
    assert json.loads(open(os.path.join(out, 'manifest.json')).read())['status'] == 'in_progress'
    # Under the bound the same failures are counted and the run completes.
    summary = _generator(standin_model_dir, n=8, stages=[_FailsSome(lambda i: i % 4 != 0)],
                         max_failure_rate=None).run(str(tmp_path / 'tolerant'))
    assert summary['status'] == 'complete' and summary['written'] == 2
    assert summary['failed'] == {'_FailsSome:RuntimeError': 6}


class _DuplicateIdSource(_FlakySource):
    def __getitem__(self, i):
        s = self.inner[i]
        if i == 2:
            s.id = self.inner[1].id
        return s


def test_summary_counts_equal_the_shards_own_counts(tmp_path, standin_model_dir):
    """A duplicate id is failed by the writer; the run's counts said it was written (5 in the shards, 6 written)."""
    summary = _generator(standin_model_dir, n=6, source=_DuplicateIdSource()).run(str(tmp_path / 'out'))
    infos = [json.loads((tmp_path / 'out' / 'shards' / s / 'shard.json').read_text()) for s in ('000000', '000001')]
    assert summary['written'] == sum(i['written'] for i in infos) == 5
    assert summary['this_run']['written'] == 5
    assert summary['this_run']['failed'] == sum(len(i['failed']) for i in infos) == sum(summary['failed'].values())
    assert 'duplicate id' in infos[0]['failed'][0]['reason']


# --- a step added in a config (issue 15 §1) -------------------------------------------------------------------------
@TRANSFORMS.register_module(name='TestOnlyDropOddTagPrompt')
class _DropOddTagPrompt(BaseTransform):
    """Test-only step: drops odd source indices and tags the prompt of the others.

    Required Keys:
        - index
        - prompt

    Modified Keys:
        - prompt

    Added Keys:
        - drop_reason: ``'test_odd_index'`` when dropped
    """

    def transform(self, results):
        if results['index'] % 2:
            return drop(results, 'test_odd_index')
        results['prompt'] += ', tagged by a config step'
        return results


def test_a_registered_step_added_in_the_config_runs_between_built_in_ones(tmp_path, standin_model_dir):
    pipeline = _pipeline()
    pipeline.insert(3, pipeline.pop())                           # SamplePrompt before COCO17Visibility
    pipeline.insert(4, dict(type='TestOnlyDropOddTagPrompt'))    # between SamplePrompt and COCO17Visibility
    assert [p['type'] for p in pipeline][3:6] == ['SamplePrompt', 'TestOnlyDropOddTagPrompt', 'COCO17Visibility']
    summary = _generator(standin_model_dir, n=6, pipeline=pipeline).run(str(tmp_path / 'out'))
    assert summary['written'] == 3 and summary['dropped'] == {'test_odd_index': 3}
    assert '_DropOddTagPrompt' in summary['timings_s']  # timed under its class name
    reader = GeneratedDataReader(tmp_path / 'out')
    prompts = PromptSampler('generic')
    assert [reader.meta(i)['index'] for i in range(3)] == [0, 2, 4]
    for i in range(3):
        meta = reader.meta(i)
        assert meta['prompt'] == prompts(meta['seed'], reader.sample(i).gender)[0] + ', tagged by a config step'


def test_the_output_lock_is_released_when_a_run_ends_or_fails(tmp_path, standin_model_dir):
    """A finished or failed in-process run leaves no writer.lock behind (the next tool run need not break it)."""
    out = tmp_path / 'out'
    _generator(standin_model_dir, n=4).run(str(out))
    assert not (out / 'writer.lock').exists()
    failing = tmp_path / 'failing'
    with pytest.raises(GenerationError):
        _generator(standin_model_dir, n=4, stages=[_FailsSome(lambda i: True)]).run(str(failing))
    assert (failing / 'manifest.json').exists() and not (failing / 'writer.lock').exists()
