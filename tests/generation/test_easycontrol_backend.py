"""EasyControlFluxBackend: the trainer's condition LoRA loads and generates as the live trained model does."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from posedreamer_mm.generation.backends import WeightsLayoutError
from posedreamer_mm.models.editors.easycontrol import EasyControlTrainer
from posedreamer_mm.registry import BACKENDS
from posedreamer_mm.testing.diffusion import write_tiny_flux

SIZE, COND = 32, 16
CPU = dict(device='cpu', dtype='float32', num_inference_steps=2, batch_size=2, control_type='pncc')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A tiny FLUX folder and an EasyControlTrainer on it whose condition LoRA is not zero, saved."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp('easycontrol_backend')
    flux = write_tiny_flux(root / 'flux')
    model = EasyControlTrainer(pretrained=flux, rank=4, alpha=8.0, cond_size=COND, max_sequence_length=16)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in sorted(model.condition_lora.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    model.save_pretrained(root / 'lora')
    return SimpleNamespace(flux=flux, model=model, lora=root / 'lora')


def results(n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [dict(seed=i, sample=SimpleNamespace(id=f's{i}'), prompt='a person standing',
                 controls=dict(pncc=rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))) for i in range(n)]


def float_images(backend, batch):
    kwargs = backend.call_arguments(batch)
    with torch.no_grad():
        return np.asarray(backend.pipe(**kwargs).images)


def test_saved_condition_lora_generates_as_the_live_trained_model(trained):
    """Loaded from the file (rank, alpha and cond_size from its metadata) == the training model's own pipeline
    run through the same backend; the condition LoRA's weight changes the images."""
    from posedreamer_mm.apis.control_eval import pipeline_backend
    loaded = BACKENDS.build(dict(type='EasyControlFluxBackend', weights=trained.flux,
                                 condition=dict(path=trained.lora), **CPU))
    live = pipeline_backend(trained.model.build_pipeline(), ['pncc'],
                            dict(num_inference_steps=2, dtype='float32', batch_size=2))
    assert type(live).__name__ == 'EasyControlFluxBackend'  # found by the wrapper's pipeline class
    batch = results()
    got = float_images(loaded, batch)
    assert loaded.pipe.cond_size == COND
    np.testing.assert_allclose(got, float_images(live, batch), atol=1e-5)
    off = BACKENDS.build(dict(type='EasyControlFluxBackend', weights=trained.flux,
                              condition=dict(path=trained.lora, weight=0.0), **CPU))
    assert np.abs(float_images(off, batch) - got).max() > 1e-3
    flipped = [dict(r, controls=dict(pncc=255 - r['controls']['pncc'])) for r in batch]
    assert np.abs(float_images(loaded, flipped) - got).max() > 1e-3  # the control is read
    assert [img.shape for img in loaded.generate(batch)] == [(SIZE, SIZE, 3)] * 2


def test_missing_or_foreign_condition_lora_is_one_clear_error(trained, tmp_path):
    with pytest.raises(WeightsLayoutError, match=r'no condition LoRA.*condition=dict\(path'):
        BACKENDS.build(dict(type='EasyControlFluxBackend', weights=trained.flux, **CPU)).setup()
    with pytest.raises(WeightsLayoutError, match=r'nope\.safetensors does not exist'):
        BACKENDS.build(dict(type='EasyControlFluxBackend', weights=trained.flux,
                            condition=dict(path=tmp_path / 'nope.safetensors'), **CPU)).setup()
    from safetensors.torch import save_file
    save_file({'transformer.x_embedder.lora_A.weight': torch.zeros(2, 16)}, tmp_path / 'other.safetensors')
    with pytest.raises(WeightsLayoutError, match=r'other\.safetensors: 1 keys are not condition-LoRA weights'):
        BACKENDS.build(dict(type='EasyControlFluxBackend', weights=trained.flux,
                            condition=dict(path=tmp_path / 'other.safetensors'), **CPU)).setup()
