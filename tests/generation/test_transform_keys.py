"""Each generation pipeline transform and stage reads and writes only the results keys its docstring documents
(Required / Optional / Modified / Added Keys, parsed by ``generation.steps.documented_keys``), and reads every key
it calls required: the documented keys are what the generator checks a config against before the first sample."""
import numpy as np
import pytest

from posedreamer_mm.generation.preparer import LoadSample
from posedreamer_mm.generation.steps import documented_keys
from posedreamer_mm.registry import POSE_SOURCES, SCORERS, TRANSFORMS
from posedreamer_mm.scoring.base import BasePoseScorer, PoseDetections

SOURCE = dict(type='AugmentedSource', source=dict(type='ProceduralPoseSource', num_samples=4, seed=1), seed=3,
              distance_range=(3.0, 4.0))


@SCORERS.register_module(name='TestOnlyEchoScorer')
class EchoScorer(BasePoseScorer):
    """Test stand-in scorer: finds one person at the keypoints it was given (shifted by ``offset`` pixels)."""

    name = 'test_echo'

    def __init__(self, keypoints=None, offset: float = 0.0) -> None:
        self.keypoints = None if keypoints is None else np.asarray(keypoints, np.float32)[:, :2] + offset

    def predict_batch(self, images):
        out = []
        for img in images:
            kp = self.keypoints if self.keypoints is not None else np.full((17, 2), 10.0, np.float32)
            x1, y1 = kp.min(0)
            x2, y2 = kp.max(0)
            out.append(PoseDetections(keypoints=kp[None], keypoint_scores=np.ones((1, 17), np.float32),
                                      bboxes=np.array([[x1, y1, x2, y2]], np.float32),
                                      bbox_scores=np.ones(1, np.float32),
                                      image_size=(img.shape[1], img.shape[0]), scorer=self.name))
        return out


class Recording(dict):
    """A results dict that records which keys are read and which are written."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read, self.written = set(), set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)

    def __setitem__(self, key, value):
        self.written.add(key)
        super().__setitem__(key, value)

    def setdefault(self, key, default=None):
        self.read.add(key)
        self.written.add(key)
        return super().setdefault(key, default)

    def update(self, *args, **kwargs):
        new = dict(*args, **kwargs)
        self.written |= set(new)
        super().update(new)

    def pop(self, key, *default):
        self.written.add(key)
        return super().pop(key, *default)


def run_recorded(transform, results: dict, kept: bool = True) -> dict:
    """Runs ``transform`` on a recording copy of ``results``; checks its reads and writes against its docstring."""
    rec = Recording(results)
    out = transform(rec)
    keys = documented_keys(transform)
    name = type(transform).__name__
    allowed_reads = keys['required'] | keys['optional'] | keys['modified'] | keys['added']
    assert rec.read <= allowed_reads, f'{name} reads undocumented keys {sorted(rec.read - allowed_reads)}'
    assert rec.written <= keys['modified'] | keys['added'], \
        f'{name} writes undocumented keys {sorted(rec.written - keys["modified"] - keys["added"])}'
    assert (out is not None) == kept, f'{name}: expected the sample to be {"kept" if kept else "dropped"}'
    if kept:
        assert keys['required'] <= rec.read, f'{name} documents {sorted(keys["required"] - rec.read)} as required'
        missing = keys['added'] - {'drop_reason'} - rec.written
        assert not missing, f'{name} documents {sorted(missing)} as added but did not add them'
    else:
        assert 'drop_reason' in rec.written
    return dict(rec)


@pytest.fixture(scope='module')
def body_model_cfg(standin_model_dir):
    return dict(type='SMPLXBodyModel', model_path=str(standin_model_dir))


def test_the_pipeline_transforms_touch_only_their_documented_keys(body_model_cfg):
    source = POSE_SOURCES.build(SOURCE)
    results = LoadSample(source, seed=0)(dict(index=0))
    for cfg in (dict(type='BodyForward', body_model=body_model_cfg), dict(type='BodyCropCamera', size=64),
                dict(type='RenderControls', controls=[dict(type='PNCCRenderer'), dict(type='DepthRenderer')],
                     body_model=body_model_cfg),
                dict(type='COCO17Visibility', min_visible=1), dict(type='SamplePrompt')):
        step = TRANSFORMS.build(cfg)
        if cfg['type'] == 'COCO17Visibility':
            run_recorded(TRANSFORMS.build(dict(cfg, min_visible=18)), results, kept=False)
        results = run_recorded(step, results)
    bad = LoadSample(source, seed=0)(dict(index=1))
    bad['sample'].body_pose = np.full(63, np.nan, np.float32)
    run_recorded(TRANSFORMS.build(dict(type='BodyForward', body_model=body_model_cfg)), bad, kept=False)
    far = dict(results, sample=results['sample'].copy())
    far['sample'].transl = np.array([0, 0, -3.0], np.float32)  # behind the camera
    far['vertices'] = far['vertices'] * np.array([1, 1, -1], np.float32)
    run_recorded(TRANSFORMS.build(dict(type='BodyCropCamera', size=64)), far, kept=False)


def test_the_stages_touch_only_their_documented_keys():
    rng = np.random.default_rng(0)
    label = np.concatenate([rng.uniform(20, 100, (17, 2)), np.full((17, 1), 2.0)], 1).astype(np.float32)
    img = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    base = dict(id='s0', index=0, img=img, keypoints_coco17=label, backend='test')
    scorer = dict(type='TestOnlyEchoScorer', keypoints=label)
    scored = run_recorded(TRANSFORMS.build(dict(type='ScorePose', scorer=scorer)), base)
    for cfg in (dict(type='FilterByPersonCount'), dict(type='FilterByOKS', thr=0.5), dict(type='FilterByHeadPose'),
                dict(type='FilterByImageQuality', min_sharpness=None, min_brightness=None, max_brightness=None,
                     max_clipped_fraction=None)):
        run_recorded(TRANSFORMS.build(cfg), scored)
    run_recorded(TRANSFORMS.build(dict(type='FilterByPersonCount', max_people=0)), scored, kept=False)
    run_recorded(TRANSFORMS.build(dict(type='FilterByImageQuality', min_sharpness=1e12)), scored, kept=False)
    off = run_recorded(TRANSFORMS.build(dict(type='ScorePose', scorer=dict(scorer, offset=40.0))), base)
    run_recorded(TRANSFORMS.build(dict(type='FilterByOKS', thr=0.9)), off, kept=False)


def test_the_keys_parser_reads_the_documented_sections():
    keys = documented_keys(TRANSFORMS.get('FilterByOKS'))
    assert keys['required'] == {'pose_match'} and keys['modified'] == {'scores', 'drop_reason'}
    keys = documented_keys(TRANSFORMS.get('FilterByHeadPose'))
    assert keys['required'] == {'img', 'keypoints_coco17', 'pose_detections', 'pose_match'}
    keys = documented_keys(TRANSFORMS.get('COCO17Visibility'))
    assert keys == dict(required={'sample'}, optional={'depth', 'clip_planes'}, modified={'sample'},
                        added={'keypoints_coco17', 'drop_reason'})
