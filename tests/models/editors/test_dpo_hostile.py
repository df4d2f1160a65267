"""DiffusionDPO under hostile settings: the global-RNG draws, non-finite errors, LoRA and loss config errors, a resume
with another LoRA scale, the reference after real training steps (SD1.5 ControlNet and FLUX control LoRA), other
target modules on load, gradient checkpointing that really recomputes, a bfloat16 policy and Flow-DPO at sigma 0
and 1. Tiny models of posedreamer_mm/testing/diffusion.py, as tests/models/editors/test_dpo.py."""
import math

import pytest
import torch
from mmengine.logging import MessageHub

from posedreamer_mm.apis.checkpoint import CheckpointMismatchError
from posedreamer_mm.models.editors.base_diffusion import OBJECTIVE_INFO_KEY
from posedreamer_mm.models.losses.dpo_losses import dpo_loss_from_errors
from posedreamer_mm.registry import MODELS
from posedreamer_mm.testing.diffusion import write_tiny_controlnet, write_tiny_flux, write_tiny_sd15
from tests.models.editors.test_dpo import build, fixed_inputs, pairs, policy_cfg, randomise_lora

LOG2_F32 = torch.tensor(math.log(2.0), dtype=torch.float32)


@pytest.fixture(scope='module')
def w(tmp_path_factory):
    """test_dpo.py's tiny SD1.5 and trained-like ControlNet folders."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp('tiny_dpo_hostile')
    return dict(sd15=write_tiny_sd15(root / 'sd15'), cn=write_tiny_controlnet(root / 'cn'), root=root)


def test_without_a_noise_seed_winner_equals_loser_still_gives_log_2_and_a_zero_margin(w):
    """noise_seed=None: the policy draws from torch's global RNG, also the VAE posterior sample. Winner and loser
    must share that draw as they share the noise: with identical images the four errors cancel pairwise, whatever
    the LoRA, so every per-pair loss is -logsigmoid(0) = log 2 and the margin is exactly 0. (The posterior was drawn
    twice before: losses 1.84 and 0.53.)"""
    model = randomise_lora(MODELS.build(dict(type='DiffusionDPO', policy=dict(policy_cfg(w), noise_seed=None),
                                             lora=dict(r=4, lora_alpha=8)))).eval()
    inputs, samples = pairs(2)
    torch.manual_seed(0)
    tie = model(dict(inputs, image_l=inputs['image_w']), samples, mode='tensor')
    torch.testing.assert_close(tie.losses, LOG2_F32.expand(2), rtol=0, atol=1e-7)
    assert tie.reward_margin.item() == 0.0 and tie.implicit_acc.item() == 0.5
    assert torch.equal(tie.reward_w, tie.reward_l)
    # the global RNG still moves on: the next call draws other numbers (other errors on distinct pairs)
    first = model(inputs, samples, mode='tensor').losses
    assert not torch.equal(first, model(inputs, samples, mode='tensor').losses)


def test_a_non_finite_error_stops_the_step_even_when_the_loss_is_finite(w, monkeypatch):
    """An infinite model error on a loser (a LoRA overflowing on one image) makes z = +inf: the sigmoid loss is
    -logsigmoid(inf) = 0, finite, and the backward through the squared error gives inf * 0 = NaN gradients. The
    step must stop before the optimiser, naming the iteration and the pair, as the trainers do for a NaN loss."""
    model = randomise_lora(build(w)).train()
    calls = []
    predict = model.policy.predict

    def overflowing(noisy, t, cond, control):
        out = predict(noisy, t, cond, control)
        calls.append(1)
        if len(calls) == 2:  # the model's loser pass: one value of pair 0 overflows
            hit = torch.zeros(out.shape, dtype=torch.bool)
            hit[0, 0, 0, 0] = True
            out = torch.where(hit, out * math.inf, out)
        return out

    monkeypatch.setattr(model.policy, 'predict', overflowing)
    inputs, samples = pairs(2)
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', 6)
    out = model(inputs, samples, mode='tensor')   # the hazard: a finite loss ...
    assert torch.isfinite(out.loss) and out.losses[0].item() == 0.0
    assert torch.isfinite(dpo_loss_from_errors(torch.tensor([0.1]), torch.tensor([math.inf]), torch.tensor([0.1]),
                                               torch.tensor([0.1]), 5000.0).loss)
    out.loss.backward()                           # ... and NaN gradients in the LoRA
    assert any(p.grad.isnan().any() for p in model.parameters())
    model.zero_grad()
    calls.clear()
    hub.update_info('iter', 6)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at iteration 7 for samples \['p0'\]"):
        model(inputs, samples)


@pytest.mark.parametrize('lora, match', [
    (dict(r=0), r'lora r \(the rank\) must be a whole number >= 1, got 0'),
    (dict(r=2.5), r'r \(the rank\).*got 2.5'),
    (dict(r=True), r'r \(the rank\).*got True'),
    (dict(lora_alpha=0), r'lora_alpha must be a finite number > 0.*got 0'),
    (dict(lora_alpha=float('nan')), r'lora_alpha must be a finite number > 0'),
    (dict(lora_dropout=0.1), r'lora_dropout must be 0, got 0.1: .*eval mode'),
    (dict(target_modules=['to_q', 'to_qq']), r"target_modules \['to_qq'\] matched no layer of the policy's unet"),
    (dict(target_modules=['attn1', 'to_q']), r"peft cannot add the LoRA .*attn1"),
    (dict(target_modules=[]), r'target_modules must be a non-empty list'),
])
def test_lora_settings_peft_would_bend_are_refused_naming_the_key(w, lora, match):
    """peft truncates r=2.5 to 2, takes True as rank 1 and lora_alpha=0 (a LoRA scaled by 0 never trains), adds the
    LoRA where any target matches and drops a misspelt one; lora_dropout never applies (the policy stays in eval);
    r=0 was reported as 'matched no layer'."""
    with pytest.raises(ValueError, match=match):
        build(w, lora=lora)


def test_a_string_target_is_one_module_name_and_the_loss_may_name_its_type(w):
    """target_modules='to_q' is the module name (list('to_q') was four one-letter targets); the loss dict may carry
    type='DiffusionDPOLoss' as docs/dpo.md writes it (it was a TypeError: 'type' given twice); another loss type is
    refused."""
    model = build(w, lora=dict(target_modules='to_q'), loss=dict(type='DiffusionDPOLoss', beta=2500, loss_type='ipo'))
    assert {n.split('/')[-2] for n, _ in model.named_parameters()} == {'to_q'}
    assert model.loss.beta == 2500.0 and model.loss.loss_type == 'ipo'
    with pytest.raises(TypeError, match="loss type must be DiffusionDPOLoss.*'BetasPriorLoss'"):
        build(w, loss=dict(type='BetasPriorLoss'))


def test_a_resume_with_another_lora_alpha_is_refused(w):
    """Same rank and targets, other lora_alpha: the checkpoint's tensors fit exactly and load, but the LoRA's scale
    alpha / r differs, so the resumed model is not the saved one. The objective a checkpoint records names it."""
    hub = MessageHub.get_current_instance()
    saved = randomise_lora(build(w, lora=dict(lora_alpha=8))).train()
    hub.update_info('iter', 0)
    saved(*pairs(2))  # records its objective, as the first step of a run does
    restored = dict(hub.get_info(OBJECTIVE_INFO_KEY))   # what mmengine's resume puts back in the hub
    assert restored['lora_alpha'] == 8.0
    try:
        hub.update_info(OBJECTIVE_INFO_KEY, restored)
        resumed = build(w, lora=dict(lora_alpha=16)).train()
        resumed.load_state_dict(saved.state_dict())  # the shapes fit
        with pytest.raises(CheckpointMismatchError, match=r'lora_alpha: checkpoint 8.0, config 16.0'):
            resumed(*pairs(2))
        hub.update_info(OBJECTIVE_INFO_KEY, dict(restored))
        same = build(w, lora=dict(lora_alpha=8)).train()
        same.load_state_dict(saved.state_dict())
        same(*pairs(2))
    finally:
        hub.pop_info(OBJECTIVE_INFO_KEY)


def test_a_checkpoint_of_other_target_modules_is_refused(w):
    a = build(w)
    with pytest.raises(CheckpointMismatchError, match=r'does not fit.*missing.*to_'):
        build(w, lora=dict(target_modules=['to_q', 'to_k'])).load_state_dict(a.state_dict())
    with pytest.raises(CheckpointMismatchError, match='does not fit'):
        build(w, lora=dict(target_modules=['to_q', 'to_k', 'to_v', 'to_out.0', 'proj_in'])).load_state_dict(
            a.state_dict())


def _train(model, inputs, samples, steps=3):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    hub = MessageHub.get_current_instance()
    for it in range(steps):
        hub.update_info('iter', it)
        loss = model(inputs, samples)['loss']
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_after_training_steps_the_reference_is_still_an_independent_base_bit_for_bit(w):
    """Three AdamW steps (weight decay on) through forward, whose reference passes switch the adapter off and on:
    the base weights do not move, the reference equals a policy built separately from the same folders exactly, and
    the trained LoRA changes the output."""
    base = MODELS.build(policy_cfg(w)).eval()
    model = build(w, lora=dict(on='both')).train()
    _train(model, *pairs(2))
    model.eval()
    lat, t, cond, control = fixed_inputs(model)
    noise = torch.randn(lat.shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = base.predict(base.noisy_latents(lat, noise, t), t, cond, control)
        with model.reference():
            ref = model.predict(model.noisy_latents(lat, noise, t), t, cond, control)
        on = model.predict(model.noisy_latents(lat, noise, t), t, cond, control)
    assert torch.equal(ref, want)
    assert (on - want).abs().max() > 1e-4
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [n for n, _ in model.named_parameters()]


def test_flux_after_training_steps_the_reference_keeps_the_control_lora_and_drops_only_dpo(tmp_path):
    """FLUX control LoRA policy (adapter 'control' on the same attention projections as 'dpo'): after DPO steps the
    reference equals the control policy built separately from its checkpoint (control LoRA on, DPO off), and
    differs from the FLUX base without the control LoRA; the control LoRA did not train."""
    flux = write_tiny_flux(tmp_path / 'flux')
    pol = dict(type='FluxControlLoRATrainer', pretrained=str(flux), rank=4, max_sequence_length=16, noise_seed=0)
    control = randomise_lora(MODELS.build(pol), seed=2).eval()
    ckpt = tmp_path / 'control.pth'
    torch.save(dict(state_dict=control.state_dict()), ckpt)
    model = MODELS.build(dict(type='DiffusionDPO', policy=pol, policy_checkpoint=str(ckpt), lora=dict(r=4))).train()
    control_before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    _train(model, *pairs(2), steps=2)
    model.eval()
    g = torch.Generator().manual_seed(0)
    lat, cn = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 4, 16, 16, generator=g)
    t = torch.tensor([0.4])
    with torch.no_grad():
        cond = control.encode_prompts(['a person'], train=False)
        want = control.predict(lat, t, cond, cn)
        control.transformer.disable_lora()
        no_control = control.predict(lat, t, cond, cn)
        control.transformer.enable_lora()
        with model.reference():
            ref = model.predict(lat, t, cond, cn)
        on = model.predict(lat, t, cond, cn)
    assert torch.equal(ref, want)
    assert (want - no_control).abs().max() > 1e-4 and (on - want).abs().max() > 1e-4
    for k, v in model.policy.state_dict().items():
        assert torch.equal(v, control_before[k]), k


def test_gradient_checkpointing_recomputes_the_blocks_and_the_lora_still_gets_gradients(w):
    """With the policy's gradient_checkpointing the UNet's attention blocks run again in the backward (the memory
    saving is real, not a flag nobody reads) and the LoRA gradients are non-zero."""
    model = randomise_lora(build(w, gradient_checkpointing=True)).train()
    # a LoRA-wrapped projection early in the first attention block (a forward hook on the whole block would not
    # fire again: the non-reentrant recomputation stops once the tensors the backward needs are back)
    to_q = next(m for n, m in model.policy.unet.named_modules() if n.endswith('transformer_blocks.0.attn1.to_q'))
    calls = []
    to_q.register_forward_hook(lambda *a: calls.append(1))
    MessageHub.get_current_instance().update_info('iter', 1)
    loss = model(*pairs(2))['loss']
    forward_calls = len(calls)   # model winner, model loser, reference winner, reference loser
    loss.backward()
    assert forward_calls == 4 and len(calls) == 6   # the two model passes recomputed in the backward
    assert all(p.grad is not None for p in model.parameters())
    assert sum(p.grad.abs().sum() for p in model.parameters()) > 0


def test_a_bfloat16_policy_gives_float32_errors_and_loss_and_an_exact_tie(w):
    """dtype='bfloat16' for the frozen UNet: the LoRA stays float32, the errors and the loss are float32 (a bfloat16
    logit beta * z would keep ~3 digits), identical images give exactly -logsigmoid(0), and the LoRA gets finite,
    non-zero float32 gradients."""
    model = randomise_lora(build(w, dtype='bfloat16')).train()
    assert model.policy.unet.dtype == torch.bfloat16
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    inputs, samples = pairs(2)
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', 2)
    tie = model(dict(inputs, image_l=inputs['image_w']), samples, mode='tensor')
    assert tie.loss.dtype == torch.float32 and tie.reward_margin.item() == 0.0
    torch.testing.assert_close(tie.losses, LOG2_F32.expand(2), rtol=0, atol=1e-7)
    hub.update_info('iter', 2)
    model(inputs, samples)['loss'].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_flow_dpo_at_sigma_0_and_1_is_finite_and_a_tie_is_log_2(tmp_path, monkeypatch):
    """The logit-normal density never gives sigma 0 or 1 in practice (sigmoid of a float32 normal saturates only
    past 16 standard deviations), but a shifted or wide density can: at both ends x_t and the target noise - x0
    stay finite (no division by sigma), so the four errors are finite and identical images still tie. (And
    lora on='controlnet' / 'both' is refused: the policy has no ControlNet.)"""
    flux = write_tiny_flux(tmp_path / 'flux')
    pol = dict(type='FluxControlLoRATrainer', pretrained=str(flux), rank=4, max_sequence_length=16, noise_seed=0)
    for on in ('controlnet', 'both'):   # a FLUX control LoRA policy has no ControlNet to put a LoRA on
        with pytest.raises(ValueError, match=f"on='{on}' but the policy FluxControlLoRATrainer has no ControlNet"):
            MODELS.build(dict(type='DiffusionDPO', policy=pol, lora=dict(r=4, on=on)))
    model = randomise_lora(MODELS.build(dict(type='DiffusionDPO', policy=pol, lora=dict(r=4)))).eval()
    monkeypatch.setattr(model.policy, 'sample_timesteps', lambda n, device, generator=None: torch.tensor([0.0, 1.0]))
    inputs, samples = pairs(2)
    MessageHub.get_current_instance().update_info('iter', 3)
    errs = model.dpo_errors(inputs, samples['prompt'], train=False)
    assert torch.equal(errs[4], torch.tensor([0.0, 1.0])) and all(torch.isfinite(e).all() for e in errs[:4])
    MessageHub.get_current_instance().update_info('iter', 3)
    tie = model(dict(inputs, image_l=inputs['image_w']), samples, mode='tensor')
    torch.testing.assert_close(tie.losses, LOG2_F32.expand(2), rtol=0, atol=1e-7)
