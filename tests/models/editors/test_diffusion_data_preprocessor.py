"""DiffusionDataPreprocessor on the contract's collated batch (pseudo_collate of PackControlPair samples)."""
import pytest
import torch
from mmengine.dataset import pseudo_collate

from posedreamer_mm.registry import MODELS


def _sample(value, k=2, size=(4, 6)):
    return dict(inputs=dict(image=torch.full((3, *size), value, dtype=torch.uint8),
                            control=torch.full((3 * k, *size), value, dtype=torch.uint8)),
                data_samples=dict(prompt=f'p{value}', sample_id=f's{value}'))


def test_images_to_minus_one_one_controls_to_zero_one():
    pre = MODELS.build(dict(type='DiffusionDataPreprocessor'))
    batch = pseudo_collate([_sample(0), _sample(255), _sample(51)])
    out = pre(batch, training=True)
    image, control = out['inputs']['image'], out['inputs']['control']
    assert image.shape == (3, 3, 4, 6) and control.shape == (3, 6, 4, 6)
    assert image.dtype == control.dtype == torch.float32
    assert image[0].unique().tolist() == [-1.0] and image[1].unique().tolist() == [1.0]
    assert image[2].unique().item() == pytest.approx(51 / 127.5 - 1)
    assert control[0].unique().tolist() == [0.0] and control[1].unique().tolist() == [1.0]
    assert control[2].unique().item() == pytest.approx(0.2)
    assert out['data_samples'] == dict(prompt=['p0', 'p255', 'p51'], sample_id=['s0', 's255', 's51'])


def test_dpo_keys_follow_their_prefix():
    pre = MODELS.build(dict(type='DiffusionDataPreprocessor'))
    one = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    out = pre(dict(inputs=dict(image_w=[one], image_l=[one * 0], control=[one]), data_samples=dict(prompt=['a'])))
    assert out['inputs']['image_w'].max() == 1 and out['inputs']['image_l'].min() == -1
    assert out['inputs']['control'].max() == 1


def test_bad_batches_are_named():
    pre = MODELS.build(dict(type='DiffusionDataPreprocessor'))
    u8 = torch.zeros(3, 4, 4, dtype=torch.uint8)
    with pytest.raises(TypeError, match=r"inputs\['image'\] must be uint8"):
        pre(dict(inputs=dict(image=[u8.float()], control=[u8])))
    with pytest.raises(ValueError, match=r"inputs\['control'\] must be \(C, H, W\) tensors of one shape"):
        pre(dict(inputs=dict(image=[u8, u8], control=[u8, torch.zeros(3, 5, 4, dtype=torch.uint8)])))
    with pytest.raises(ValueError, match="'mask' starts with neither"):
        pre(dict(inputs=dict(image=[u8], mask=[u8])))
    with pytest.raises(ValueError, match='empty batch'):
        pre(dict(inputs=dict(image=[], control=[])))
