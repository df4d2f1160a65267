"""FluxControlLoRATrainer on a tiny FLUX: the widened input, the flow loss, and the LoRA the backend loads."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from posedreamer_mm.models.editors.flux_control import FluxControlLoRATrainer, pack_latents, unpack_latents
from posedreamer_mm.registry import BACKENDS
from posedreamer_mm.testing.diffusion import write_tiny_flux

SIZE = 32  # pixels; the tiny VAE is 2x, FLUX packs 2 x 2: 8 x 8 = 64 image tokens


@pytest.fixture(scope='module')
def flux_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return write_tiny_flux(tmp_path_factory.mktemp('tiny_flux') / 'flux')


def trainer(flux_dir, **kw):
    kw = dict(dict(rank=4, max_sequence_length=16, noise_seed=0), **kw)
    return FluxControlLoRATrainer(pretrained=flux_dir, **kw)


def batch(seed=0, n=2):
    gen = torch.Generator().manual_seed(seed)
    return (dict(image=torch.rand(n, 3, SIZE, SIZE, generator=gen) * 2 - 1,
                 control=torch.rand(n, 3, SIZE, SIZE, generator=gen)),
            dict(prompt=['a man walking', 'a woman sitting'][:n]))


def randomise_lora(model, seed=0, std=0.3):
    """Seeded A and B matrices (a fresh LoRA's B is zero and changes nothing; its A comes from the global RNG)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.lora_layers.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def test_widened_input_starts_as_the_base_model_whatever_the_control(flux_dir):
    """Zero control columns + a fresh LoRA: the prediction equals the unwidened base transformer's own output."""
    from diffusers import FluxTransformer2DModel
    model = trainer(flux_dir)
    base = FluxTransformer2DModel.from_pretrained(flux_dir / 'transformer')
    assert model.transformer.x_embedder.in_features == 2 * base.x_embedder.in_features
    assert model.transformer.config.in_channels == 2 * base.config.in_channels
    inputs, samples = batch()
    cond = model.encode_prompts(samples['prompt'], train=False)
    latents = model.encode_images(inputs['image'])
    gen = torch.Generator().manual_seed(1)
    noisy, t = torch.randn(latents.shape, generator=gen), torch.tensor([0.3, 0.8])
    h, w = latents.shape[-2:]
    from posedreamer_mm.models.editors.flux_control import latent_ids
    with torch.no_grad():
        expected = base(hidden_states=pack_latents(noisy), timestep=t, img_ids=latent_ids(h, w),
                        pooled_projections=cond['pooled_projections'], txt_ids=cond['txt_ids'],
                        encoder_hidden_states=cond['encoder_hidden_states'], return_dict=False)[0]
        for control in (inputs['control'], 1 - inputs['control']):
            got = model.predict(noisy, t, cond, model.encode_controls(control, train=False))
            torch.testing.assert_close(got, unpack_latents(expected, h, w), rtol=0, atol=1e-5)


def test_pack_unpack_and_the_flow_formulas_by_hand(flux_dir):
    model = trainer(flux_dir)
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 4, 4, 6, generator=gen), torch.randn(2, 4, 4, 6, generator=gen)
    tokens = pack_latents(x0)
    # token (row i, col j) holds channel c's 2 x 2 patch at feature 4c + 2di + dj (diffusers' packing order)
    assert tokens.shape == (2, 2 * 3, 16)
    assert tokens[1, 1 * 3 + 2, 4 * 3 + 2 * 1 + 0] == x0[1, 3, 2 * 1 + 1, 2 * 2 + 0]
    assert torch.equal(unpack_latents(tokens, 4, 6), x0)
    sigmas = torch.tensor([0.25, 0.9])
    noisy, target = model.noisy_latents(x0, noise, sigmas), model.target(x0, noise, sigmas)
    for b in range(2):
        s = float(sigmas[b])
        for idx in [(0, 0, 0), (3, 2, 5), (1, 3, 1)]:
            x, n = float(x0[(b, *idx)]), float(noise[(b, *idx)])
            assert math.isclose(float(noisy[(b, *idx)]), (1 - s) * x + s * n, rel_tol=1e-6, abs_tol=1e-6)
            assert math.isclose(float(target[(b, *idx)]), n - x, rel_tol=1e-6, abs_tol=1e-6)


def test_timesteps_are_logit_normal_sigmas(flux_dir):
    model = trainer(flux_dir, logit_mean=0.5, logit_std=0.7)
    t = model.sample_timesteps(4, 'cpu', torch.Generator().manual_seed(3))
    z = torch.randn(4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(t, 1 / (1 + torch.exp(-(0.5 + 0.7 * z))))
    many = model.sample_timesteps(20000, 'cpu', torch.Generator().manual_seed(4))
    logits = torch.log(many / (1 - many))
    assert abs(float(logits.mean()) - 0.5) < 0.03 and abs(float(logits.std()) - 0.7) < 0.03


def test_loss_decreases_on_a_fixed_batch_and_only_the_lora_trains(flux_dir):
    model = trainer(flux_dir, rank=8)
    names = set(model.state_dict())
    assert names and all('lora_A' in n or 'lora_B' in n for n in names)
    assert any(n.startswith('lora_layers.x_embedder/') for n in names)
    inputs, samples = batch()
    cond = model.encode_prompts(samples['prompt'], train=False)
    control = model.encode_controls(inputs['control'], train=False)
    latents = model.encode_images(inputs['image'])
    gen = torch.Generator().manual_seed(2)
    noise, t = model.sample_noise(latents, gen), model.sample_timesteps(2, 'cpu', gen)
    base_before = {k: v.clone() for k, v in model.transformer.state_dict().items() if 'lora' not in k}
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = model.per_sample_loss(latents, noise, t, cond, control).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0], losses
    after = model.transformer.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in base_before.items())


def test_gradient_checkpointing_gives_the_same_gradients(flux_dir):
    grads = []
    for ckpt in (False, True):
        model = trainer(flux_dir, gradient_checkpointing=ckpt)
        randomise_lora(model)
        model.train()
        inputs, samples = batch()
        model(inputs, samples)['loss'].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-6)


def _results(n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [dict(seed=i, sample=SimpleNamespace(id=f's{i}'), prompt='a person standing',
                 controls=dict(pncc=rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))) for i in range(n)]


def _float_images(backend, results):
    kwargs = backend.call_arguments(results)
    with torch.no_grad():
        return np.asarray(backend.pipe(**kwargs).images)


def test_saved_lora_loads_in_flux_control_backend_as_trained(flux_dir, tmp_path):
    """save_pretrained -> FluxControlBackend(loras=[...]) on the plain FLUX folder reproduces the live trained model
    (alpha != rank: only right with the adapter metadata) and changes the output."""
    model = trainer(flux_dir, rank=4, alpha=8.0)
    randomise_lora(model)
    model.save_pretrained(tmp_path / 'lora')
    cpu = dict(device='cpu', dtype='float32', num_inference_steps=2, batch_size=2, control_type='pncc')
    results = _results()
    loaded = BACKENDS.build(dict(type='FluxControlBackend', weights=flux_dir,
                                 loras=[dict(path=tmp_path / 'lora', name='control')], **cpu))
    live = BACKENDS.build(dict(type='FluxControlBackend', weights=flux_dir, **cpu))
    live.pipe = model.build_pipeline()
    got, want = _float_images(loaded, results), _float_images(live, results)
    np.testing.assert_allclose(got, want, atol=1e-5)
    off = BACKENDS.build(dict(type='FluxControlBackend', weights=flux_dir,
                              loras=[dict(path=tmp_path / 'lora', name='control', weight=0.0)], **cpu))
    assert np.abs(_float_images(off, results) - got).max() > 1e-3


def test_checkpoint_state_round_trips_strictly(flux_dir):
    a, b = trainer(flux_dir), trainer(flux_dir)
    randomise_lora(a, seed=5)
    b.load_state_dict(a.state_dict())
    inputs, samples = batch()
    a.eval(), b.eval()
    with torch.no_grad():
        torch.testing.assert_close(a(inputs, samples, mode='tensor'), b(inputs, samples, mode='tensor'))
    with pytest.raises(Exception, match='does not fit'):
        trainer(flux_dir, rank=2).load_state_dict(a.state_dict())


def test_a_wrong_folder_and_a_missing_x_embedder_target_are_named(flux_dir, tmp_path):
    with pytest.raises(Exception, match=r'nope.*does not exist'):
        FluxControlLoRATrainer(pretrained=tmp_path / 'nope')
    with pytest.raises(ValueError, match="must include 'x_embedder'"):
        trainer(flux_dir, target_modules=['attn.to_q'])


def test_backend_feeds_the_vae_the_control_range_the_trainer_trained_on(flux_dir):
    """FluxControlPipeline hands a tensor control to the VAE unnormalised (it normalises only PIL images): the
    backend must give it [-1, 1], the range the trainer (and diffusers' Flux Control training) encodes."""
    model = trainer(flux_dir)
    backend = BACKENDS.build(dict(type='FluxControlBackend', weights=flux_dir, device='cpu', dtype='float32',
                                  num_inference_steps=1, batch_size=2, control_type='pncc'))
    backend.pipe = model.build_pipeline()
    seen = []
    encode = model.vae.encode
    model.vae.encode = lambda x, *a, **k: (seen.append(x.clone()), encode(x, *a, **k))[1]
    try:
        results = _results()
        _float_images(backend, results)
    finally:
        model.vae.encode = encode
    controls = torch.stack([torch.from_numpy(r['controls']['pncc']).permute(2, 0, 1) for r in results]) / 255.0
    torch.testing.assert_close(seen[0], controls * 2 - 1)


def test_bfloat16_run_trains_and_its_validation_pipeline_generates(flux_dir):
    """Frozen parts in bfloat16, the VAE in float32 for encoding: the live pipeline must still run (diffusers'
    FLUX pipelines assume one dtype)."""
    model = trainer(flux_dir, weight_dtype='bfloat16')
    assert model.transformer.dtype == torch.bfloat16 and model.vae.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    inputs, samples = batch()
    model.train()
    model(inputs, samples)['loss'].backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        images = model.build_pipeline()(prompt=samples['prompt'], control_image=inputs['control'] * 2 - 1,
                                        height=SIZE, width=SIZE, num_inference_steps=1, output_type='np').images
    assert images.shape == (2, SIZE, SIZE, 3) and np.isfinite(images).all()
