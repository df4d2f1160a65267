"""ControlPairDataset + PackControlPair: contract §1's sample from generated datasets and photo pairs."""
import cv2
import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate

from posedreamer_mm.datasets.control_pairs import MissingControlError
from posedreamer_mm.generation import GeneratedDataReader
from posedreamer_mm.registry import DATASETS, GENERATORS

CROP = 32
PIPELINE = [dict(type='LoadControlPair'), dict(type='PackControlPair')]


def _read(path):
    """The file's pixels as RGB, read independently of the dataset."""
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope='module')
def render_pairs(standin_model_dir, tmp_path_factory):
    """3 render-backend samples with PNCC and depth controls (a generated dataset is a pair dataset)."""
    out = tmp_path_factory.mktemp('render_pairs') / 'out'
    GENERATORS.build(dict(
        type='DatasetGenerator', body_model=dict(type='SMPLXBodyModel', model_path=str(standin_model_dir)),
        source=dict(type='AugmentedSource', source=dict(type='ProceduralPoseSource', num_samples=3, seed=1), seed=3,
                    distance_range=(3.0, 4.0)),
        pipeline=[dict(type='BodyForward'), dict(type='BodyCropCamera', size=CROP, margin=0.1),
                  dict(type='RenderControls', controls=[dict(type='PNCCRenderer'), dict(type='DepthRenderer')]),
                  dict(type='SamplePrompt')],
        backend=dict(type='RenderBackend', batch_size=3), writer=dict(shard_size=2, image_format='png'),
        num_samples=3, seed=0, progress=False)).run(str(out))
    return out


def test_a_sample_is_the_contract_format_with_controls_in_config_order(render_pairs):
    reader = GeneratedDataReader(render_pairs)
    dataset = DATASETS.build(dict(type='ControlPairDataset', data_root=str(render_pairs),
                                  control_types=['depth', 'pncc'], pipeline=PIPELINE))
    assert len(dataset) == 3
    for i in range(3):
        out = dataset[i]
        image, control = out['inputs']['image'], out['inputs']['control']
        assert image.dtype == torch.uint8 and image.shape == (3, CROP, CROP)
        assert control.dtype == torch.uint8 and control.shape == (6, CROP, CROP)
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), _read(reader.image_path(i)))
        np.testing.assert_array_equal(control[:3].permute(1, 2, 0).numpy(), _read(reader.control_path(i, 'depth')))
        np.testing.assert_array_equal(control[3:].permute(1, 2, 0).numpy(), _read(reader.control_path(i, 'pncc')))
        assert out['data_samples'] == dict(prompt=reader.meta(i)['prompt'], sample_id=reader.ids[i])
        assert out['data_samples']['prompt'].startswith(('a full-body photo', 'a man', 'a woman', 'a person'))
    batch = pseudo_collate([dataset[0], dataset[2]])
    assert [t.shape for t in batch['inputs']['control']] == [(6, CROP, CROP)] * 2
    assert batch['data_samples']['sample_id'] == [reader.ids[0], reader.ids[2]]
    assert isinstance(batch['data_samples']['prompt'], list) and len(batch['data_samples']['prompt']) == 2


def test_a_missing_control_type_names_the_file_and_what_is_stored(render_pairs):
    with pytest.raises(MissingControlError) as err:
        DATASETS.build(dict(type='ControlPairDataset', data_root=str(render_pairs), control_types=['pncc', 'openpose'],
                            pipeline=PIPELINE))
    message = str(err.value)
    assert "['openpose']" in message and "['depth', 'pncc']" in message
    assert f'{render_pairs}/shards/000000/meta.jsonl' in message
    with pytest.raises(ValueError, match='each control once'):
        DATASETS.build(dict(type='ControlPairDataset', data_root=str(render_pairs), control_types=['pncc', 'pncc']))
    with pytest.raises(FileNotFoundError, match='nowhere'):
        DATASETS.build(dict(type='ControlPairDataset', data_root='/nowhere'))


def test_resize_keeps_control_colours_and_a_damaged_file_is_named(render_pairs, tmp_path):
    reader = GeneratedDataReader(render_pairs)
    dataset = DATASETS.build(dict(type='ControlPairDataset', data_root=str(render_pairs), control_types='pncc',
                                  pipeline=[dict(type='LoadControlPair'), dict(type='ResizeControlPair', size=16),
                                            dict(type='PackControlPair', extra_keys=['row'])]))
    out = dataset[1]
    assert out['inputs']['image'].shape == (3, 16, 16) and out['inputs']['control'].shape == (3, 16, 16)
    assert out['data_samples']['row'] == 1
    colours = {tuple(c) for c in _read(reader.control_path(1, 'pncc')).reshape(-1, 3)}
    # Nearest neighbour: every resized control pixel is a colour the renderer drew (no blends).
    assert {tuple(c) for c in out['inputs']['control'].permute(1, 2, 0).reshape(-1, 3).tolist()} <= colours
    with open(reader.control_path(1, 'pncc'), 'r+b') as f:   # damage one control file
        f.write(b'\0' * 64)
    with pytest.raises(FileNotFoundError, match=reader.ids[1]):
        dataset[1]


def test_photo_pairs_are_read_as_pairs(hmr_paths, standin_model_dir, tmp_path):
    out = tmp_path / 'pairs'
    summary = GENERATORS.build(dict(
        type='DatasetGenerator', body_model=dict(type='SMPLXBodyModel', model_path=str(standin_model_dir)),
        source=dict(type='HMRPhotoSource', dataset=dict(type='BEDLAMHMRDataset', **hmr_paths['bedlam'])),
        pipeline=[dict(type='BodyForward'), dict(type='BodyCropCamera', size=CROP, margin=0.1),
                  dict(type='PhotoPairCheck', min_crop_px=20), dict(type='LoadPhotoCrop'),
                  dict(type='RenderControls', controls=[dict(type='PNCCRenderer')]),
                  dict(type='CaptionFromTemplate', templates=['a photo of {person} from {dataset}'])],
        backend=dict(type='PhotoCropBackend'), writer=dict(shard_size=2, image_format='png'), seed=0,
        progress=False)).run(str(out))
    assert summary['written'] == 4
    dataset = DATASETS.build(dict(type='ControlPairDataset', data_root=str(out), pipeline=PIPELINE))
    reader = GeneratedDataReader(out)
    sample = dataset[0]
    assert sample['data_samples']['prompt'] == 'a photo of a person from bedlam'
    # The image is the photo crop (the photo's body sits where the control's body is).
    image = sample['inputs']['image'].permute(1, 2, 0).numpy().astype(int)
    control = sample['inputs']['control'].permute(1, 2, 0).numpy().sum(-1) > 0
    body = np.abs(image - image[1, 1]).sum(-1) > 6
    assert body[control].mean() > 0.98 and reader.meta(0)['backend'] == 'photo_crop'
