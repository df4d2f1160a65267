"""DiffusionDPO on tiny SD1.5 ControlNet and FLUX control trainers (posedreamer_mm/testing/diffusion.py)."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub

from posedreamer_mm.apis.checkpoint import CheckpointMismatchError
from posedreamer_mm.models.losses.dpo_losses import dpo_loss_from_errors
from posedreamer_mm.registry import BACKENDS, MODELS
from posedreamer_mm.testing.diffusion import write_tiny_controlnet, write_tiny_flux, write_tiny_sd15

SIZE = 16


@pytest.fixture(scope='module')
def w(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp('tiny_dpo')
    # a trained-like ControlNet (non-zero output layers): a zero-initialised one would make ControlNet LoRA
    # gradients exactly zero
    return dict(sd15=write_tiny_sd15(root / 'sd15'), cn=write_tiny_controlnet(root / 'cn'), root=root)


def policy_cfg(w, **kw):
    return dict(type='ControlNetTrainer', pretrained=str(w['sd15']), controlnet=str(w['cn']),
                conditioning_embedding_out_channels=(16, 32), noise_seed=0, **kw)


def build(w, lora=None, loss=None, **policy_kw):
    return MODELS.build(dict(type='DiffusionDPO', policy=policy_cfg(w, **policy_kw),
                             lora={**dict(r=4, lora_alpha=8), **(lora or {})}, loss=loss))


def randomise_lora(model, seed=0, std=0.05):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.lora_layers.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def pairs(n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (dict(image_w=torch.rand(n, 3, SIZE, SIZE, generator=gen) * 2 - 1,
                 image_l=torch.rand(n, 3, SIZE, SIZE, generator=gen) * 2 - 1,
                 control=torch.rand(n, 3, SIZE, SIZE, generator=gen)),
            dict(prompt=['a person standing'] * n, sample_id=[f'p{i}' for i in range(n)]))


def fixed_inputs(model, n=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    lat = torch.randn(n, 4, SIZE // 2, SIZE // 2, generator=gen)
    control = torch.rand(n, 3, SIZE, SIZE, generator=gen)
    cond = model.encode_prompts(['a person', 'a man walking'][:n], train=False)
    return lat, torch.tensor([10, 700][:n]), cond, control


def test_only_the_adapter_trains_and_is_checkpointed(w):
    model = build(w).train()
    names = [n for n, _ in model.named_parameters()]
    assert names and all(n.startswith('lora_layers.unet/') for n in names)
    assert {n.rsplit('/', 1)[-1].split('.')[0] for n in names} == {'lora_A', 'lora_B'}
    assert {n.split('/')[-2] for n in names} <= {'to_q', 'to_k', 'to_v', '0'}
    assert all(k.startswith('lora_layers.') for k in model.state_dict())
    # the policy (UNet, its frozen original layers, the ControlNet, VAE, text encoder) is frozen and outside
    assert not any(p.requires_grad for n, p in model.policy.unet.named_parameters() if 'lora_' not in n)
    assert not any(p.requires_grad for p in model.policy.controlnet.parameters())
    assert model.loss.beta == 5000.0 and model.prediction_type == 'epsilon'
    out = model(*pairs(2))
    out['loss'].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    # a reference pass inside the step must not leave other parameters trainable
    assert [n for n, p in model.named_parameters() if p.requires_grad] == names
    assert not any(p.requires_grad for p in model.policy.controlnet.parameters())


def test_adapters_disabled_output_equals_the_base_model_exactly(w):
    """The reference (adapter off) is bit-identical to the policy built without any adapter; with the adapter on
    (non-zero LoRA) the output differs, and leaving the context turns it back on."""
    base = MODELS.build(policy_cfg(w)).eval()
    model = randomise_lora(build(w, lora=dict(on='both'))).eval()
    lat, t, cond, control = fixed_inputs(model)
    noise = torch.randn(lat.shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = base.predict(base.noisy_latents(lat, noise, t), t, cond, control)
        on = model.predict(model.noisy_latents(lat, noise, t), t, cond, control)
        with model.reference():
            ref = model.predict(model.noisy_latents(lat, noise, t), t, cond, control)
        again = model.predict(model.noisy_latents(lat, noise, t), t, cond, control)
    assert torch.equal(ref, want)
    assert (on - want).abs().max() > 1e-4
    assert torch.equal(again, on)


def test_the_loss_uses_one_noise_and_timestep_per_pair(w):
    """forward's loss equals the published Diffusion-DPO form over errors recomputed by hand with the same draws;
    with winner == loser the model and reference terms cancel exactly (loss log 2, margin 0)."""
    model = randomise_lora(build(w)).eval()
    inputs, samples = pairs(2)
    MessageHub.get_current_instance().update_info('iter', 3)
    out = model(inputs, samples, mode='tensor')
    from posedreamer_mm.models.utils.diffusion_training import step_generator
    gen = step_generator(0, 3, 0)
    with torch.no_grad():
        cond = model.encode_prompts(samples['prompt'], train=False, generator=gen)
        control = model.encode_controls(inputs['control'], train=False, generator=gen)
        state = gen.get_state()
        lat_w = model.encode_images(inputs['image_w'], generator=gen)
        gen.set_state(state)  # one posterior draw for both images of a pair
        lat_l = model.encode_images(inputs['image_l'], generator=gen)
        noise = torch.randn(lat_w.shape, generator=gen)
        t = model.sample_timesteps(2, 'cpu', gen)
        errs = [model.per_sample_loss(x, noise, t, cond, control) for x in (lat_w, lat_l)]
        with model.reference():
            errs += [model.per_sample_loss(x, noise, t, cond, control) for x in (lat_w, lat_l)]
    z = -0.5 * ((errs[0] - errs[2]) - (errs[1] - errs[3]))
    torch.testing.assert_close(out.losses, -torch.nn.functional.logsigmoid(5000.0 * z), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss, dpo_loss_from_errors(*errs[:2], *errs[2:], 5000.0).loss)

    same = dict(inputs, image_l=inputs['image_w'])
    MessageHub.get_current_instance().update_info('iter', 3)
    tie = model(same, samples, mode='tensor')
    torch.testing.assert_close(tie.losses, torch.full((2,), float(np.log(2))), rtol=0, atol=1e-6)
    assert tie.implicit_acc.item() == 0.5


def like_a_trained_vae(model, seed=5):
    """Makes the tiny random VAE encode as a trained one does: a narrow posterior (log-variance -20; a random
    encoder's std ~1 is four times its means' spread, so the latents of any two images would differ mostly by
    posterior noise) and a ``scaling_factor`` that gives the latents unit variance (SD's 0.18215 fits SD's VAE, not
    this one: x0 would be a twentieth of the noise). benchmarks/bench_control_learning.py's stand-in VAE, in memory."""
    vae = model.policy.vae
    with torch.no_grad():
        vae.quant_conv.weight[4:].zero_()
        vae.quant_conv.bias[4:].fill_(-20.0)
        images = torch.rand(16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        vae.register_to_config(scaling_factor=float(1.0 / vae.encode(images).latent_dist.mean.std()))
    return model


def preference_pairs(n=4, seed=0):
    """``n`` pairs sharing one preference, as OKS-ranked pairs share "follows the control": each winner is a
    low-contrast noise image, its loser a full-contrast one; controls are random."""
    gen = torch.Generator().manual_seed(seed)
    return (dict(image_w=(torch.rand(n, 3, SIZE, SIZE, generator=gen) * 2 - 1) * 0.1,
                 image_l=torch.rand(n, 3, SIZE, SIZE, generator=gen) * 2 - 1,
                 control=torch.rand(n, 3, SIZE, SIZE, generator=gen)),
            dict(prompt=['a person standing'] * n, sample_id=[f'p{i}' for i in range(n)]))


def implicit_accuracy(model, inputs, samples, draws=256, step=10**6):
    """The implicit accuracy on the pairs, estimated on fresh draws: each pair's four errors (model and reference,
    winner and loser; one noise, timestep and posterior draw for all four) averaged over ``draws`` draws of
    iteration ``step`` (none of training's), then compared: the implicit reward is an expectation over noise and
    timestep, and one draw's sign is mostly noise. Ties count half. Also returns the mean DPO loss of the draws."""
    n = inputs['image_w'].shape[0]
    tiled = {k: v.repeat(draws, *([1] * (v.dim() - 1))) for k, v in inputs.items()}
    model.eval()
    MessageHub.get_current_instance().update_info('iter', step)
    with torch.no_grad():
        errs = [e.view(draws, n).mean(0) for e in model.dpo_errors(tiled, samples['prompt'] * draws, train=False)[:4]]
    model.train()
    margin = -((errs[0] - errs[2]) - (errs[1] - errs[3]))   # reward_w - reward_l up to beta / 2
    return ((margin > 0).float() + 0.5 * (margin == 0).float()).mean().item()


def test_dpo_learns_a_handful_of_pairs(w):
    """40 AdamW steps on 4 fixed pairs, each step with fresh noise / timestep draws (8 per pair): the DPO loss falls
    (first vs last 10-step window, and below the fresh adapter's log 2) and the implicit accuracy on the pairs,
    estimated on 256 fresh draws per pair, goes from 0.5 (the fresh adapter is the reference) to >= 0.9."""
    model = like_a_trained_vae(build(w, lora=dict(r=4, lora_alpha=8))).train()
    inputs, samples = preference_pairs(4)
    assert implicit_accuracy(model, inputs, samples, draws=8) == 0.5   # every margin is exactly 0
    draws = 8
    tiled = {k: v.repeat(draws, *([1] * (v.dim() - 1))) for k, v in inputs.items()}
    prompts = dict(samples, prompt=samples['prompt'] * draws)
    hub = MessageHub.get_current_instance()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    losses = []
    for it in range(40):
        hub.update_info('iter', it)   # the step's own draws: none repeats
        out = model(tiled, prompts)
        opt.zero_grad()
        out['loss'].backward()
        opt.step()
        losses.append(out['loss'].item())
    assert losses[0] == pytest.approx(np.log(2), abs=1e-6)
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < first - 0.1 and last < np.log(2) - 0.05, (first, last)
    acc = implicit_accuracy(model, inputs, samples)
    assert acc >= 0.9, acc
    assert set(model.last_metrics) >= {'implicit_acc', 'reward_margin', 'model_mse', 'ref_mse', 'err_w_diff'}


def test_strict_resume_of_the_lora_state(w):
    a, b = randomise_lora(build(w), seed=3), build(w)
    b.load_state_dict(a.state_dict())
    inputs, samples = pairs(2)
    a.eval(), b.eval()
    for m in (a, b):
        MessageHub.get_current_instance().update_info('iter', 5)
        m.last = m(inputs, samples, mode='tensor').losses
    torch.testing.assert_close(a.last, b.last, rtol=0, atol=0)
    with pytest.raises(CheckpointMismatchError, match='does not fit'):
        build(w, lora=dict(r=2)).load_state_dict(a.state_dict())
    with pytest.raises(CheckpointMismatchError, match='does not fit'):
        build(w, lora=dict(on='both')).load_state_dict(a.state_dict())


def _records(n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [dict(seed=i, sample=SimpleNamespace(id=f's{i}'), prompt='a person standing',
                 controls=dict(pncc=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))) for i in range(n)]


def _images(backend, records):
    kwargs = backend.call_arguments(records)
    with torch.no_grad():
        return np.asarray(backend.pipe(**kwargs).images, dtype=np.float64)


def test_saved_lora_loads_in_the_sd15_controlnet_backend(w, tmp_path):
    """save_pretrained (UNet and ControlNet LoRA, alpha != r) -> SD15ControlNetBackend(loras=[...]) reproduces the
    live DPO model's images and differs from the base's."""
    model = randomise_lora(build(w, lora=dict(on='both', r=4, lora_alpha=16)), seed=1).eval()
    out = tmp_path / 'lora'
    model.save_pretrained(out)
    assert (out / 'pytorch_lora_weights.safetensors').is_file()
    assert (out / 'controlnet' / 'pytorch_lora_weights.safetensors').is_file()
    cpu = dict(type='SD15ControlNetBackend', weights=str(w['sd15']), device='cpu', dtype='float32',
               num_inference_steps=2, batch_size=2, controlnets=dict(weights=str(w['cn']), control_type='pncc'))
    records = _records()
    loaded = BACKENDS.build(dict(cpu, loras=model.generation_loras(out)))
    base = BACKENDS.build(cpu)
    live = BACKENDS.build(cpu)
    live.pipe = model.build_pipeline()
    got = _images(loaded, records)
    np.testing.assert_allclose(got, _images(live, records), atol=1e-5)
    base_img = _images(base, records)
    assert np.abs(got - base_img).max() > 1e-3
    with model.reference():  # the hook's base images: the live pipeline with the adapter off
        np.testing.assert_allclose(_images(live, records), base_img, atol=1e-6)


def test_flux_policy_uses_flow_dpo_and_keeps_the_control_lora_in_the_reference(tmp_path):
    """On a FLUX control LoRA trainer the loss is Flow-DPO (beta 100); the reference switches only the DPO adapter
    off: the control LoRA stays on, so the reference equals the policy without DPO."""
    flux = write_tiny_flux(tmp_path / 'flux')
    pol = dict(type='FluxControlLoRATrainer', pretrained=str(flux), rank=4, max_sequence_length=16, noise_seed=0)
    plain = MODELS.build(pol).eval()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in plain.lora_layers.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    ckpt = tmp_path / 'control.pth'
    torch.save(dict(state_dict=plain.state_dict()), ckpt)
    model = MODELS.build(dict(type='DiffusionDPO', policy=pol, policy_checkpoint=str(ckpt), lora=dict(r=4)))
    randomise_lora(model).eval()
    assert model.prediction_type == 'flow' and model.loss.beta == 100.0
    assert all(n.startswith('lora_layers.transformer/') for n, _ in model.named_parameters())
    assert not any(p.requires_grad for p in model.policy.lora_layers.parameters())
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(1, 4, 16, 16, generator=g)  # tiny VAE: 4 latent channels
    control = torch.randn(1, 4, 16, 16, generator=g)
    t = torch.tensor([0.4])
    with torch.no_grad():
        cond = plain.encode_prompts(['a person'], train=False)
        want = plain.predict(lat, t, cond, control)
        with model.reference():
            ref = model.predict(lat, t, cond, control)
        on = model.predict(lat, t, cond, control)
    assert torch.equal(ref, want)
    assert (on - want).abs().max() > 1e-4
    assert not any(p.requires_grad for p in model.policy.lora_layers.parameters())


def test_bad_settings_are_named(w):
    with pytest.raises(ValueError, match="lora on must be one of"):
        build(w, lora=dict(on='vae'))
    with pytest.raises(ValueError, match='unknown'):
        build(w, lora=dict(rank=4))
    with pytest.raises(ValueError, match='matched no layer'):
        build(w, lora=dict(target_modules=['not_a_layer']))
    model = build(w)
    with pytest.raises(KeyError, match='image_l'):
        model(dict(image_w=torch.zeros(1, 3, SIZE, SIZE), control=torch.zeros(1, 3, SIZE, SIZE)),
              dict(prompt=['a']))


def test_gradient_checkpointing_gives_the_same_lora_gradients(w):
    """The policy's gradient_checkpointing (UNet and ControlNet recomputed in the backward) reaches the LoRA of
    both with the gradients of the plain backward."""
    grads = []
    for checkpointing in (False, True):
        model = randomise_lora(build(w, lora=dict(on='both'), gradient_checkpointing=checkpointing)).train()
        MessageHub.get_current_instance().update_info('iter', 1)
        model(*pairs(2))['loss'].backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)


def test_tr_dpo_reference_adapter_starts_at_the_base_and_a_hard_update_makes_it_the_policy(w):
    """reference_adapter=True: the reference is a second adapter, equal to the base at first (zero B); after
    update_reference(1.0) it equals the current policy exactly; TRDPOHook calls it every interval iterations."""
    from types import SimpleNamespace

    from posedreamer_mm.engine.hooks.tr_dpo_hook import TRDPOHook
    base = MODELS.build(policy_cfg(w)).eval()
    model = randomise_lora(build(w), seed=4)
    tr = MODELS.build(dict(type='DiffusionDPO', policy=policy_cfg(w), lora=dict(r=4, lora_alpha=8),
                           reference_adapter=True))
    tr.load_state_dict({**tr.state_dict(), **model.state_dict()})  # same policy LoRA, fresh reference
    tr.eval()
    assert all(k.startswith(('lora_layers.', 'ref_layers.')) for k in tr.state_dict())
    assert [n for n, p in tr.named_parameters() if p.requires_grad] == [n for n, _ in model.named_parameters()]
    lat, t, cond, control = fixed_inputs(tr)
    noise = torch.randn(lat.shape, generator=torch.Generator().manual_seed(4))

    def out(m):
        with torch.no_grad():
            return m.predict(m.noisy_latents(lat, noise, t), t, cond, control)

    policy_out = out(tr)
    with tr.reference():
        assert torch.equal(out(tr), out(base))
    hook = TRDPOHook(interval=2, alpha=1.0)
    runner = SimpleNamespace(model=tr, iter=0)
    hook.after_train_iter(runner, 0)  # iteration 1: no update
    with tr.reference():
        assert torch.equal(out(tr), out(base))
    runner.iter = 1
    hook.after_train_iter(runner, 1)  # iteration 2: ref <- policy
    with tr.reference():
        torch.testing.assert_close(out(tr), policy_out, rtol=0, atol=0)
    torch.testing.assert_close(out(tr), policy_out, rtol=0, atol=0)  # the policy itself is unchanged
    assert not any(p.requires_grad for p in tr.ref_layers.parameters())
    with pytest.raises(TypeError, match='reference_adapter=True'):
        TRDPOHook().before_train(SimpleNamespace(model=model))


def test_a_deep_copy_shares_the_policy_and_exports_its_own_lora(w, tmp_path):
    """mmengine's EMAHook deep-copies the model: the copy shares the frozen policy (no second UNet), and its
    save_pretrained writes the copy's (averaged) LoRA, leaving the live model's adapter as it was."""
    import copy

    from safetensors.torch import load_file
    model = randomise_lora(build(w), seed=6)
    ema = copy.deepcopy(model)
    assert ema.policy is model.policy and ema.parts['unet'] is model.policy.unet
    assert ema.lora_layers is not model.lora_layers
    randomise_lora(ema, seed=7)
    live_before = {k: v.clone() for k, v in model.lora_state_dicts()['unet'].items()}
    ema.save_pretrained(tmp_path / 'ema')
    saved = load_file(tmp_path / 'ema' / 'pytorch_lora_weights.safetensors')
    for key, layer in ema.lora_layers.items():
        name = 'unet.' + key.split('/', 1)[1].replace('/', '.') + '.weight'
        torch.testing.assert_close(saved[name], layer.weight, rtol=0, atol=0)
    for k, v in model.lora_state_dicts()['unet'].items():
        torch.testing.assert_close(v, live_before[k], rtol=0, atol=0)
