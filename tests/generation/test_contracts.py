"""Every registered backend, renderer and pose source passes its shared contract (posedreamer_mm/testing/contracts).

A new component is tested by adding a case below; ``test_every_registered_*_has_a_case`` fails until it is.
"""
import os

import numpy as np
import pytest
import torch

from posedreamer_mm.body.sources import write_pose_list
from posedreamer_mm.body.sources.base import BodySource
from posedreamer_mm.generation.backends import BaseGenerationBackend
from posedreamer_mm.registry import BACKENDS, BODY_MODELS, POSE_SOURCES, RENDERERS
from posedreamer_mm.render import BaseControlRenderer
from posedreamer_mm.testing import body_fixtures as fx
from posedreamer_mm.testing.contracts import (
    BackendContract,
    RendererContract,
    SourceContract,
    missing_cases,
    prepared_results,
)
from posedreamer_mm.testing.diffusion import write_tiny_easycontrol_lora, write_tiny_weights
from tests.generation.test_photo_backend import _body, _write_bedlam_like

SIZE = 64
CPU = dict(device='cpu', dtype='float32', num_inference_steps=2, batch_size=4)

#: Backend cases: name -> config from the tiny weights folders (several per class where it has modes).
BACKEND_CASES = {
    'RenderBackend': lambda w: dict(type='RenderBackend', batch_size=4),
    'SD15ControlNetBackend': lambda w: dict(type='SD15ControlNetBackend', weights=w['sd15'], **CPU,
                                            controlnets=dict(weights=w['controlnet_sd15'], control_type='pncc')),
    'SD15ControlNetBackend[openpose+depth]': lambda w: dict(
        type='SD15ControlNetBackend', weights=w['sd15'], **CPU,
        controlnets=[dict(weights=w['controlnet_sd15'], control_type='openpose'),
                     dict(weights=w['controlnet_sd15_b'], control_type='depth', scale=0.7)]),
    'SDXLControlNetBackend': lambda w: dict(type='SDXLControlNetBackend', weights=w['sdxl'], **CPU,
                                            controlnets=dict(weights=w['controlnet_sdxl'], control_type='pncc')),
    'SDXLControlNetUnionBackend': lambda w: dict(type='SDXLControlNetUnionBackend', weights=w['sdxl'], **CPU,
                                                 controlnet=dict(weights=w['controlnet_union']),
                                                 control_types=['openpose', 'depth']),
    'FluxControlNetBackend': lambda w: dict(type='FluxControlNetBackend', weights=w['flux'], **CPU,
                                            controlnets=dict(weights=w['controlnet_flux'], control_type='pncc')),
    'FluxControlNetBackend[openpose+depth]': lambda w: dict(
        type='FluxControlNetBackend', weights=w['flux'], **CPU,
        controlnets=[dict(weights=w['controlnet_flux'], control_type='openpose'),
                     dict(weights=w['controlnet_flux_b'], control_type='depth')]),
    'FluxControlBackend': lambda w: dict(type='FluxControlBackend', weights=w['flux_control'], control_type='depth',
                                         **CPU),
    'EasyControlFluxBackend': lambda w: dict(
        type='EasyControlFluxBackend', weights=w['flux'], control_type='pncc', **CPU,
        condition=dict(path=write_tiny_easycontrol_lora(w['flux'], w['flux'].parent / 'easycontrol.safetensors'))),
    'PhotoCropBackend': lambda w: dict(type='PhotoCropBackend', batch_size=4),
}
#: Backends whose results need their own source and steps (fixture names): the photo backend hands on the photo
#: crop that LoadPhotoCrop cuts from an HMRPhotoSource's photos.
PHOTO_BACKENDS = {'PhotoCropBackend'}

RENDERER_CASES = {
    'PNCCRenderer': lambda bm: dict(type='PNCCRenderer', body_model=bm),
    'SkeletonRenderer': lambda bm: dict(type='SkeletonRenderer'),
    'DepthRenderer': lambda bm: dict(type='DepthRenderer'),
    'NormalRenderer': lambda bm: dict(type='NormalRenderer'),
    'ShadedRenderer': lambda bm: dict(type='ShadedRenderer'),
}

SOURCE_CASES = {
    'ProceduralPoseSource': lambda d: dict(type='ProceduralPoseSource', num_samples=5, seed=3),
    'AugmentedSource': lambda d: dict(type='AugmentedSource', repeats=2, seed=1,
                                      source=dict(type='ProceduralPoseSource', num_samples=3, seed=3)),
    'AMASSSource': lambda d: dict(type='AMASSSource', files=d['amass'], num_betas=16),
    'BEDLAMSource': lambda d: dict(type='BEDLAMSource', label_file=d['bedlam'], img_size=fx.IMG_SIZE, num_betas=11),
    'PoseDreamerLabelSource': lambda d: dict(type='PoseDreamerLabelSource', label_dir=d['posedreamer']),
    'HMRPhotoSource': lambda d: dict(type='HMRPhotoSource', dataset=d['photo']),
    'PoseListSource': lambda d: dict(type='PoseListSource', file=d['pose_list']),
    'PoseListSource[camera]': lambda d: dict(type='PoseListSource', file=d['pose_list'], num_betas=16,
                                             camera=dict(distance=4.0, img_size=(512, 384))),
}


def test_every_registered_backend_has_a_case():
    assert missing_cases(BACKENDS, BaseGenerationBackend, BACKEND_CASES) == []


def test_every_registered_renderer_has_a_case():
    assert missing_cases(RENDERERS, BaseControlRenderer, RENDERER_CASES) == []


def test_every_registered_source_has_a_case():
    assert missing_cases(POSE_SOURCES, BodySource, SOURCE_CASES) == []


# --- backends ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def tiny_weights(tmp_path_factory):
    return write_tiny_weights(tmp_path_factory.mktemp('tiny_diffusers'))


@pytest.fixture(scope='module')
def photo_dataset(tmp_path_factory, standin_model_dir):
    """A BEDLAM-layout dataset of five people on four ramp photos (test_photo_backend's builder; two people share
    ``c.png``): the HMRPhotoSource case and the photo backend's inputs."""
    from posedreamer_mm.body.body_model import SMPLXBodyModel
    people = [('a.png', _body(0.3, 0.1, 5.0, 0.4)), ('b.png', _body(-0.4, -0.1, 4.0, -0.7)),
              ('c.png', _body(0.0, 0.0, 4.5, 1.2)), ('c.png', _body(1.0, 0.1, 6.0, -0.3)),
              ('d.png', _body(-0.2, 0.2, 5.5, 2.5))]
    dataset, _ = _write_bedlam_like(tmp_path_factory.mktemp('photo_dataset'), SMPLXBodyModel(standin_model_dir),
                                    people, ['a.png', 'b.png', 'c.png', 'd.png'])
    return dataset


@pytest.fixture(scope='module')
def photo_generator_inputs(standin_model_dir, photo_dataset):
    return dict(source=dict(type='HMRPhotoSource', dataset=photo_dataset),
                body_model=dict(type='SMPLXBodyModel', model_path=str(standin_model_dir)),
                controls=[dict(type='PNCCRenderer')], after_crop=[dict(type='LoadPhotoCrop')], size=SIZE, seed=5)


@pytest.fixture(scope='module')
def photo_results_batch(photo_generator_inputs):
    return prepared_results(**photo_generator_inputs, num=4)


@pytest.fixture(scope='module')
def render_generator_inputs(standin_model_dir):
    return dict(source=dict(type='AugmentedSource', source=dict(type='ProceduralPoseSource', num_samples=8, seed=0),
                            seed=0, distance_range=(2.5, 4.0)),
                body_model=dict(type='SMPLXBodyModel', model_path=str(standin_model_dir)),
                controls=[dict(type='PNCCRenderer'), dict(type='SkeletonRenderer'), dict(type='DepthRenderer')],
                size=SIZE, seed=5)


@pytest.fixture(scope='module')
def render_results_batch(render_generator_inputs):
    """Four results dicts from the generator's own pre-backend transforms, 64 x 64 crops, three controls."""
    return prepared_results(**render_generator_inputs, num=4)


@pytest.fixture(scope='module', params=sorted(BACKEND_CASES))
def backend_case(request):
    return request.param


def _inputs_kind(case):
    return 'photo' if case.split('[')[0] in PHOTO_BACKENDS else 'render'


@pytest.fixture(scope='module')
def generator_inputs(backend_case, request):
    return request.getfixturevalue(f'{_inputs_kind(backend_case)}_generator_inputs')


@pytest.fixture(scope='module')
def results_batch(backend_case, request):
    return request.getfixturevalue(f'{_inputs_kind(backend_case)}_results_batch')


@pytest.fixture(scope='module')
def backend(backend_case, tiny_weights):
    torch.set_num_threads(1)
    built = BACKENDS.build(BACKEND_CASES[backend_case](tiny_weights))
    built.setup()
    return built


class TestBackendContract(BackendContract):
    @pytest.fixture(autouse=True)
    def _tolerance(self, backend):
        # Exact for the rendering baseline; float32 kernel rounding (< 1e-6) for diffusion on CPU.
        self.batch_tolerance = 0 if type(backend).__name__ in {'RenderBackend', *PHOTO_BACKENDS} else 1
        # The photo backend's image is the photo: the seed changes nothing (checked instead).
        self.seeded = type(backend).__name__ not in PHOTO_BACKENDS


# --- renderers ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def body_model(standin_model_dir):
    return BODY_MODELS.build(dict(type='SMPLXBodyModel', model_path=str(standin_model_dir)))


@pytest.fixture(scope='module')
def body(body_model):
    source = POSE_SOURCES.build(SOURCE_CASES['ProceduralPoseSource'](None))
    sample = source[1]
    with torch.no_grad():
        out = body_model(**sample.stack([sample]))
    scale = 128 / float(sample.img_size[1])  # the sample's camera at 96 x 128 (W x H)
    return dict(vertices=out.vertices[0].numpy(), faces=body_model.faces, focal=sample.focal * scale,
                princpt=np.array([48.0, 64.0]), img_size=np.array([96, 128]), joints=out.joints[0].numpy())


@pytest.fixture(scope='module', params=sorted(RENDERER_CASES))
def renderer(request, body_model):
    return RENDERERS.build(dict(RENDERER_CASES[request.param](body_model), size=None))


class TestRendererContract(RendererContract):
    pass


# --- pose sources -------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def source_files(tmp_path_factory, photo_dataset):
    root = tmp_path_factory.mktemp('source_files')
    bodies = fx.reference_bodies(3)
    procedural = POSE_SOURCES.build(dict(type='AugmentedSource', seed=1, betas_range=2.0, yaw_range=(-180, 180),
                                         source=dict(type='ProceduralPoseSource', num_samples=6, seed=4)))
    return dict(amass=fx.write_amass(str(root / 'amass' / 'seq_stageii.npz'), bodies, gender='neutral'),
                bedlam=fx.write_bedlam(str(root / 'bedlam.npz'), bodies),
                posedreamer=os.path.dirname(fx.write_posedreamer(str(root / 'pd'), bodies)[0]), photo=photo_dataset,
                pose_list=write_pose_list(root / 'poses.npz', [procedural[i] for i in (5, 1, 3)],
                                          columns=dict(predicted=np.array([0.2, 0.5, 0.1]))))


@pytest.fixture(scope='module', params=sorted(SOURCE_CASES))
def source_factory(request, source_files):
    return lambda: POSE_SOURCES.build(SOURCE_CASES[request.param](source_files))


@pytest.fixture(scope='module')
def source(source_factory):
    return source_factory()


class TestSourceContract(SourceContract):
    pass
