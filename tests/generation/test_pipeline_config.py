"""The generation pipeline is config: every shipped generation config builds its DatasetGenerator from the file
alone (with the SMPL-X stand-in), every registered transform builds from a plain dict with its documented defaults,
and the generator hands its one body model to every step, renderer and backend that takes one."""
import glob
import inspect
from pathlib import Path

import pytest
from mmengine.config import Config

from posedreamer_mm.body.gendered import GenderedSMPLXBodyModel
from posedreamer_mm.registry import GENERATORS, TRANSFORMS
from posedreamer_mm.testing import body_fixtures as fx
from tests.generation.test_transform_keys import EchoScorer  # noqa: F401  (registers TestOnlyEchoScorer)

ROOT = Path(__file__).resolve().parents[2]
# Every generation config: the demo's (its HMR training config, configs/demo/hmr_*.py, is a training config and is
# built by tests/configs/test_hmr_configs.py and the demo chain test) and configs/generation/. The photo-pair configs
# (configs/control/pairs/) need photo fixtures and run in tests/generation/test_photo_backend.py; the DPO candidate
# configs (configs/dpo/candidates/) build in tests/generation/test_candidates.py.
CONFIGS = sorted([c for c in glob.glob(str(ROOT / 'configs' / 'demo' / '*.py')) if not Path(c).name.startswith('hmr_')]
                 + glob.glob(str(ROOT / 'configs' / 'generation' / '**' / '*.py'), recursive=True))


@pytest.fixture(scope='module')
def all_genders(tmp_path_factory):
    from posedreamer_mm.body.standin import ensure_standin_smplx
    path = tmp_path_factory.mktemp('standin3')
    ensure_standin_smplx(str(path), ('neutral', 'male', 'female'))
    return path


def test_every_generation_config_is_listed():
    names = {Path(c).relative_to(ROOT).as_posix() for c in CONFIGS}
    assert {'configs/demo/render_standin_procedural.py', 'configs/generation/render_procedural_generic-512.py',
            'configs/generation/render_amass-yoga_yoga-512.py'} <= names and len(names) >= 9


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: Path(p).relative_to(ROOT).as_posix())
def test_each_config_builds_its_generator_from_the_file(path, all_genders, tmp_path):
    cfg = Config.fromfile(path)
    gen_cfg = cfg.generator.to_dict()
    gen_cfg['body_model']['model_path'] = str(all_genders)      # the stand-in instead of a licensed download
    inner = gen_cfg['source'].get('source', {})
    if inner.get('type') == 'PoseListSource':                   # the mining round: a list tools/mine_hard.py wrote
        from posedreamer_mm.body.sources import write_pose_list
        from posedreamer_mm.registry import POSE_SOURCES
        pool = POSE_SOURCES.build(dict(type='ProceduralPoseSource', num_samples=3, seed=4))
        inner['file'] = write_pose_list(tmp_path / 'hard_poses.npz', [pool[i] for i in range(3)])
        gen_cfg['num_samples'] = 4
    elif inner.get('type') == 'AMASSSource':                      # the yoga poses: two small AMASS files
        fx.write_amass(str(tmp_path / 'yoga' / 'a_stageii.npz'), fx.reference_bodies(3, seed=0), gender='female')
        inner['data_root'] = str(tmp_path / 'yoga')
        gen_cfg['num_samples'] = None
    else:
        gen_cfg['num_samples'] = 4
    backend = gen_cfg['backend']
    if backend['type'] != 'RenderBackend':                       # weights are read by setup(), never at build
        backend['device'] = 'cpu'
    generator = GENERATORS.build(dict(gen_cfg, progress=False))
    assert [type(t).__name__ for t in generator.preparer.transforms] == [p['type'] for p in gen_cfg['pipeline']]
    # One body model in the process: the pipeline's and the render backend's are the generator's.
    body = generator.body_model
    assert isinstance(body, GenderedSMPLXBodyModel)
    assert generator.preparer.transforms[0].body_models is body
    if backend['type'] == 'RenderBackend':
        assert generator.backend.body_model_cfg is body


def test_the_demo_config_runs(tmp_path, standin_model_dir):
    cfg = Config.fromfile(str(ROOT / 'configs' / 'demo' / 'render_standin_procedural.py')).generator.to_dict()
    cfg['body_model']['model_path'] = str(standin_model_dir)
    cfg['pipeline'][1]['size'] = 64
    summary = GENERATORS.build(dict(cfg, num_samples=3, progress=False)).run(str(tmp_path / 'demo'))
    assert summary['written'] == 3 and summary['status'] == 'complete'


@pytest.fixture(scope='module')
def captioner_dir(tmp_path_factory):
    from tests.generation.test_photo_backend import _tiny_captioner
    folder = tmp_path_factory.mktemp('captioner') / 'blip'
    _tiny_captioner(folder)
    return folder


def _filled(cls, standin_model_dir, captioner_dir) -> dict:
    """A config of ``cls`` with only its required arguments (no default) filled."""
    fill = dict(body_model=dict(type='SMPLXBodyModel', model_path=str(standin_model_dir)),
                controls=[dict(type='DepthRenderer')], scorer=dict(type='TestOnlyEchoScorer'),
                model_path=str(captioner_dir),  # CaptionImage: a tiny random BLIP saved the way a real one is
                size=64)  # ResizeControlPair / ResizeDPOPair: the side length training reads
    required = [p.name for p in inspect.signature(cls).parameters.values()
                if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    missing = [name for name in required if name not in fill]
    assert not missing, f'{cls.__name__} requires {missing}: add a documented stand-in value to this test'
    return dict(type=cls.__name__, **{name: fill[name] for name in required})


def test_every_registered_transform_builds_from_a_plain_dict(standin_model_dir, captioner_dir):
    ours = {name: cls for name, cls in TRANSFORMS.module_dict.items() if cls.__module__.startswith('posedreamer_mm.')}
    assert {'BodyForward', 'RenderControls', 'SamplePrompt', 'ScorePose', 'FilterByOKS', 'HMRTopdownAffine'} \
        <= set(ours)
    for name, cls in sorted(ours.items()):
        built = TRANSFORMS.build(_filled(cls, standin_model_dir, captioner_dir))
        assert type(built) is cls
        assert repr(built)  # every transform describes itself
    # The issue's own example: a transform builds its children from dicts.
    controls = TRANSFORMS.build(dict(type='RenderControls', controls=[dict(type='DepthRenderer')]))
    assert list(controls.renderers) == ['depth']
