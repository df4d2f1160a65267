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


def speed_switched(monkeypatch, cfg):
    """Sets up the backend of ``cfg`` with ``channels_last`` and ``compile`` on; returns (backend, the class names
    of the modules converted to channels_last). ``torch.compile`` only wraps here (it compiles on the first call)."""
    converted = []
    to = torch.nn.Module.to

    def spy(module, *args, **kwargs):
        if kwargs.get('memory_format') is torch.channels_last:
            converted.append(type(module).__name__)
        return to(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, 'to', spy)
    backend = BACKENDS.build(dict(cfg, channels_last=True, compile=dict(backend='eager')))
    backend.setup()
    monkeypatch.setattr(torch.nn.Module, 'to', to)
    return backend, converted


def test_channels_last_and_compile_reach_the_transformer_as_in_flux_control(trained, tmp_path, monkeypatch):
    """The base's speed switches apply to EasyControl's transformer exactly as to FluxControlBackend's: converted
    to channels_last, wrapped by torch.compile, and (EasyControl) still carrying the condition processors."""
    from diffusers import FluxTransformer2DModel

    from posedreamer_mm.models.editors.easycontrol import FluxEasyControlPipeline
    from posedreamer_mm.models.editors.easycontrol.processor import condition_processors
    from posedreamer_mm.testing.diffusion import write_tiny_flux
    cpu = {k: v for k, v in CPU.items() if k != 'control_type'}
    flux_control, flux_converted = speed_switched(monkeypatch, dict(
        type='FluxControlBackend', weights=write_tiny_flux(tmp_path / 'flux_control', control=True),
        control_type='pncc', **cpu))
    easy, easy_converted = speed_switched(monkeypatch, dict(
        type='EasyControlFluxBackend', weights=trained.flux, condition=dict(path=trained.lora), **CPU))
    assert flux_converted == ['FluxTransformer2DModel']
    assert easy_converted == flux_converted
    assert isinstance(easy.pipe, FluxEasyControlPipeline)
    for pipe in (flux_control.pipe, easy.pipe.pipe):  # the wrapper calls its inner FluxPipeline's transformer
        assert isinstance(pipe.transformer, torch._dynamo.eval_frame.OptimizedModule)
        assert isinstance(pipe.transformer._orig_mod, FluxTransformer2DModel)
    inner = easy.pipe.pipe.transformer._orig_mod
    assert len(condition_processors(inner)) == len(inner.attn_processors)
