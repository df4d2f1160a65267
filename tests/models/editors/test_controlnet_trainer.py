"""ControlNetTrainer on tiny SD1.5 / SDXL folders (posedreamer_mm/testing/diffusion.py), loaded by the real code."""
import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, DDPMScheduler

from posedreamer_mm.apis.checkpoint import CheckpointMismatchError
from posedreamer_mm.generation.backends.weights import WeightsLayoutError
from posedreamer_mm.registry import MODELS
from posedreamer_mm.testing.diffusion import write_tiny_controlnet, write_tiny_sd15, write_tiny_sdxl

TINY = dict(conditioning_embedding_out_channels=(16, 32))  # the tiny VAE shrinks 2x


@pytest.fixture(scope='module')
def w(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp('tiny_cn_train')
    out = dict(sd15=write_tiny_sd15(root / 'sd15'), sdxl=write_tiny_sdxl(root / 'sdxl'),
               cn=write_tiny_controlnet(root / 'cn'), cn_xl=write_tiny_controlnet(root / 'cn_xl', sdxl=True))
    v = root / 'sd15_v'
    shutil.copytree(out['sd15'], v)
    cfg = json.loads((v / 'scheduler' / 'scheduler_config.json').read_text())
    (v / 'scheduler' / 'scheduler_config.json').write_text(json.dumps({**cfg, 'prediction_type': 'v_prediction'}))
    out['sd15_v'] = v
    return out


def build(pretrained, **kw):
    return MODELS.build(dict(type='ControlNetTrainer', pretrained=None if pretrained is None else str(pretrained),
                             **{**TINY, **kw}))


def batch(n=2, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (dict(image=torch.rand(n, 3, size, size, generator=gen) * 2 - 1,
                 control=torch.rand(n, 3, size, size, generator=gen)),
            dict(prompt=['a person standing', 'a man walking'][:n] + [''] * max(0, n - 2)))


def test_only_the_controlnet_is_trained_and_checkpointed(w):
    model = build(w['sd15']).train()
    assert {n.split('.')[0] for n, _ in model.named_parameters()} == {'controlnet'}
    assert all(k.startswith('controlnet.') for k in model.state_dict())
    for name in ('unet', 'vae', 'text_encoder'):
        part = getattr(model, name)
        assert not part.training and not any(p.requires_grad for p in part.parameters())
    # from_unet: the ControlNet's encoder is the UNet's, its output convolutions are zero
    torch.testing.assert_close(model.controlnet.conv_in.weight, model.unet.conv_in.weight)
    assert not model.controlnet.controlnet_mid_block.weight.any()

    loss = model(*batch())['loss']
    loss.backward()
    unet_before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads['controlnet.controlnet_mid_block.weight'].abs().sum() > 0  # zero conv learns first
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    opt.step()
    assert all(torch.equal(v, model.unet.state_dict()[k]) for k, v in unet_before.items())
    assert model.controlnet.controlnet_mid_block.weight.any()


def test_untrained_controlnet_leaves_the_unet_prediction_unchanged(w):
    """Zero convolutions: the prediction equals the bare UNet's on the same inputs (an independent forward)."""
    model = build(w['sd15']).eval()
    inputs, samples = batch()
    cond = model.encode_prompts(samples['prompt'], train=False)
    latents = model.encode_images(inputs['image'])
    noisy, t = torch.randn_like(latents), torch.tensor([10, 900])
    bare = model.unet(noisy, t, encoder_hidden_states=cond['encoder_hidden_states']).sample
    with torch.no_grad():
        torch.testing.assert_close(model.predict(noisy, t, cond, model.encode_controls(inputs['control'], False)),
                                   bare)
    loaded = build(w['sd15'], controlnet=str(w['cn'])).eval()  # a trained-like ControlNet folder
    with torch.no_grad():
        assert not torch.allclose(loaded.predict(noisy, t, cond, inputs['control']), bare, atol=1e-4)
    ref = ControlNetModel.from_pretrained(w['cn'])
    torch.testing.assert_close(loaded.controlnet.state_dict(), ref.state_dict())


def test_prediction_type_follows_the_scheduler_config(w):
    eps, v = build(w['sd15']), build(w['sd15_v'])
    assert eps.prediction_type == 'epsilon' and v.prediction_type == 'v_prediction'
    sched = DDPMScheduler.from_pretrained(w['sd15_v'] / 'scheduler')
    x0, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([3, 700])
    torch.testing.assert_close(v.target(x0, noise, t), sched.get_velocity(x0, noise, t))
    torch.testing.assert_close(v.noisy_latents(x0, noise, t), sched.add_noise(x0, noise, t))
    torch.testing.assert_close(eps.target(x0, noise, t), noise)
    assert build(w['sd15'], prediction_type='v_prediction').prediction_type == 'v_prediction'
    with pytest.raises(ValueError, match="'epsilon' or 'v_prediction'"):
        build(w['sd15'], prediction_type='sample')


def test_caption_and_control_dropout(w):
    model = build(w['sd15'], caption_dropout=1.0, control_dropout=1.0)
    empty = model.encode_prompts(['', ''], train=False)['encoder_hidden_states']
    dropped = model.encode_prompts(['a person', 'a man'], train=True)['encoder_hidden_states']
    kept = model.encode_prompts(['a person', 'a man'], train=False)['encoder_hidden_states']
    torch.testing.assert_close(dropped, empty)
    assert not torch.allclose(kept, empty)
    controls = batch()[0]['control']
    assert not model.encode_controls(controls, train=True).any()
    torch.testing.assert_close(model.encode_controls(controls, train=False), controls)
    with pytest.raises(ValueError, match='no prompts'):
        model.encode_prompts([], train=True)
    with pytest.raises(ValueError, match='2 prompts for 3 images'):
        model(batch(3)[0], dict(prompt=['a', 'b']))
    with pytest.raises(ValueError, match=r'image size \(18, 16\) \(H, W\) is not a multiple of 4'):
        model.encode_images(torch.zeros(1, 3, 18, 16))  # (the tiny VAE and UNet each halve once)
    with pytest.raises(ValueError, match='conditioning_channels=3'):
        model.encode_controls(torch.zeros(1, 6, 16, 16), train=False)


def test_sdxl_conditions_on_pooled_text_and_the_pipeline_s_time_ids(w):
    model = build(w['sdxl']).train()
    assert model.sdxl
    inputs, samples = batch(size=16)
    cond = model.encode_prompts(samples['prompt'], train=False)
    pipe = model.pipeline()
    embeds, _, pooled, _ = pipe.encode_prompt(samples['prompt'], device='cpu', do_classifier_free_guidance=False)
    torch.testing.assert_close(cond['added_cond_kwargs']['text_embeds'], pooled)
    torch.testing.assert_close(cond['encoder_hidden_states'], embeds)
    latents = model.encode_images(inputs['image'])
    want = pipe._get_add_time_ids((16, 16), (0, 0), (16, 16), torch.float32,
                                  text_encoder_projection_dim=model.text_encoder_2.config.projection_dim)
    torch.testing.assert_close(model._time_ids(latents), want.repeat(2, 1))
    loss = model(inputs, samples)['loss']
    loss.backward()
    assert torch.isfinite(loss) and model.controlnet.controlnet_mid_block.weight.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients(w):
    grads = []
    for flag in (False, True):
        model = build(w['sd15'], controlnet=str(w['cn']), gradient_checkpointing=flag, noise_seed=3).train()
        assert model.controlnet.is_gradient_checkpointing == model.unet.is_gradient_checkpointing == flag
        model(*batch())['loss'].backward()
        grads.append(model.controlnet.conv_in.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_wrong_paths_and_folders_are_named(w, tmp_path):
    with pytest.raises(WeightsLayoutError, match='nope does not exist'):
        build(tmp_path / 'nope')
    with pytest.raises(WeightsLayoutError, match=r"cn has no model_index.json"):
        build(w['cn'])
    single = tmp_path / 'sd15.safetensors'
    single.write_bytes(b'x')
    with pytest.raises(WeightsLayoutError, match=r'sd15.safetensors is a single checkpoint file; training needs'):
        build(single)
    with pytest.raises(WeightsLayoutError, match=r'cn_xl does not fit the UNet of .*sd15: cross_attention_dim=64'):
        build(w['sd15'], controlnet=str(w['cn_xl']))
    with pytest.raises(WeightsLayoutError, match=r'sd15 has no config.json \(it is a pipeline folder'):
        build(w['sd15'], controlnet=str(w['sd15']))  # (a pipeline folder where a ControlNet folder belongs)
    with pytest.raises(WeightsLayoutError, match='conditioning_channels=3 \\(config 6\\)'):
        build(w['sd15'], controlnet=str(w['cn']), conditioning_channels=6)
    with pytest.raises(ValueError, match=r'shrink the control 8x but the VAE .* shrinks images 2x'):
        build(w['sd15'], conditioning_embedding_out_channels=None)
    broken = tmp_path / 'cn_broken'
    shutil.copytree(w['cn'], broken)
    from safetensors.torch import load_file, save_file
    state = load_file(broken / 'diffusion_pytorch_model.safetensors')
    state.pop('controlnet_cond_embedding.conv_in.weight')
    save_file(state, broken / 'diffusion_pytorch_model.safetensors')
    with pytest.raises(WeightsLayoutError, match=r"1 missing \['controlnet_cond_embedding.conv_in.weight'\]"):
        build(w['sd15'], controlnet=str(broken))


def test_state_loads_strictly_and_saves_in_the_diffusers_layout(w, tmp_path):
    model = build(w['sd15'], controlnet=str(w['cn']))
    fresh = build(w['sd15'])
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.controlnet.state_dict(), model.controlnet.state_dict())
    six = build(w['sd15'], conditioning_channels=6)  # the same ControlNet for 2 control images: another shape
    with pytest.raises(CheckpointMismatchError, match=r'1 of another shape .*controlnet_cond_embedding.conv_in'):
        six.load_state_dict(model.state_dict(), strict=False)
    from mmengine.runner.checkpoint import load_state_dict as mm_load  # what Runner.resume calls (strict=False)
    with pytest.raises(CheckpointMismatchError, match='1 missing'):
        mm_load(fresh, {k: v for k, v in model.state_dict().items() if k != 'controlnet.conv_in.bias'})
    model.save_pretrained(tmp_path / 'out')
    assert json.loads((tmp_path / 'out' / 'config.json').read_text())['_class_name'] == 'ControlNetModel'
    torch.testing.assert_close(ControlNetModel.from_pretrained(tmp_path / 'out').state_dict(),
                               model.controlnet.state_dict())


def test_bf16_frozen_base_and_cpu_autocast_train_the_float32_controlnet(w):
    """What AmpOptimWrapper(dtype='bfloat16') does on a GPU, on the CPU: autocast around a bf16 frozen base."""
    ref = build(w['sd15'], controlnet=str(w['cn']), noise_seed=1).train()
    model = build(w['sd15'], controlnet=str(w['cn']), noise_seed=1, dtype='bfloat16').train()
    assert model.unet.dtype == torch.bfloat16 and model.text_encoder.dtype == torch.bfloat16
    assert model.vae.dtype == torch.float32 and model.controlnet.dtype == torch.float32
    want = ref(*batch())['loss']
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = model(*batch())['loss']
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(want.item(), rel=0.05)
    loss.backward()
    grad = model.controlnet.conv_in.weight.grad
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # without autocast (OptimWrapper, no AMP) the float32 ControlNet still takes the bf16 text features
    assert torch.isfinite(model(*batch())['loss'])
    # the live pipeline over a bf16 UNet, a float32 ControlNet and a float32 VAE generates (it autocasts)
    kw = dict(prompt=['a person'], image=batch(1)[0]['control'], num_inference_steps=2, height=16, width=16,
              output_type='np')
    images = model.build_pipeline()(generator=torch.Generator().manual_seed(0), **kw).images
    ref_images = ref.build_pipeline()(generator=torch.Generator().manual_seed(0), **kw).images
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()
    assert np.abs(images - ref_images).max() < 0.1  # bf16 rounding, not another image


def _config_dict(folder):
    cfg = json.loads((folder / 'config.json').read_text())
    cls = cfg.get('_class_name') or cfg['architectures'][0]
    return dict(type=cls, **{k: v for k, v in cfg.items() if not k.startswith('_') and k != 'architectures'})


def test_components_from_config_dicts_or_other_folders(w):
    """pretrained=None: every frozen part from a config dict (random weights, the tiny-test route) or a built
    object; with a folder, one part replaced by another folder (e.g. SDXL's fp16-fix VAE)."""
    from diffusers import AutoencoderKL

    from posedreamer_mm.testing.diffusion import tiny_clip_tokenizer
    sd = w['sd15']
    sched = json.loads((sd / 'scheduler' / 'scheduler_config.json').read_text())
    parts = dict(unet=_config_dict(sd / 'unet'), vae=_config_dict(sd / 'vae'),
                 text_encoder=_config_dict(sd / 'text_encoder'), tokenizer=tiny_clip_tokenizer(),
                 scheduler=dict(type=sched['_class_name'], **{k: v for k, v in sched.items() if k[0] != '_'}))
    model = build(None, components=parts).train()
    ref = build(sd)
    assert not model.sdxl and type(model.text_encoder).__name__ == 'CLIPTextModel'
    for name in ('unet', 'vae', 'text_encoder'):
        got, want = getattr(model, name).state_dict(), getattr(ref, name).state_dict()
        assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
    assert not torch.equal(model.unet.conv_in.weight, ref.unet.conv_in.weight)  # random, not the folder's
    assert torch.isfinite(model(*batch())['loss'])

    swapped = build(sd, components=dict(vae=str(w['sdxl'] / 'vae')))
    torch.testing.assert_close(swapped.vae.state_dict(), AutoencoderKL.from_pretrained(w['sdxl'] / 'vae').state_dict())
    assert not torch.equal(swapped.vae.encoder.conv_in.weight, ref.vae.encoder.conv_in.weight)

    with pytest.raises(ValueError, match=r"pretrained=None needs every component .* missing \['tokenizer'"):
        build(None, components={k: v for k, v in parts.items() if k != 'tokenizer'})
    with pytest.raises(ValueError, match=r"components \['unett'\] are not among"):
        build(sd, components=dict(unett={}))
    with pytest.raises(WeightsLayoutError, match=r"components\['vae'\] = .*nothing is not a vae folder"):
        build(sd, components=dict(vae=str(w['cn'] / 'nothing')))
    with pytest.raises(WeightsLayoutError, match=r"components\['vae'\] = .*cn holds a 'ControlNetModel', not one "
                                                 r"of \['AutoencoderKL'\]"):
        build(sd, components=dict(vae=str(w['cn'])))


def test_a_resume_on_a_base_of_another_prediction_type_stops(w, tmp_path):
    """The same ControlNet shapes on a v-prediction base (its scheduler says so): a resume would regress v on an
    optimiser state trained for epsilon; it stops naming the prediction type, while load_from fine-tunes."""
    from .test_base_diffusion import runner
    assert build(w['sd15']).training_objective()['prediction_type'] == 'epsilon'
    assert build(w['sd15_v']).training_objective()['prediction_type'] == 'v_prediction'
    runner(tmp_path, 'eps', build(w['sd15'], caption_dropout=0.1), 2, size=16).train()
    resumed = runner(tmp_path, 'v', build(w['sd15_v'], caption_dropout=0.1), 4, resume=True,
                     load_from=str(tmp_path / 'iter_2.pth'), size=16)
    with pytest.raises(CheckpointMismatchError, match=r"prediction_type: checkpoint 'epsilon', config "
                                                      r"'v_prediction'\)\. Continuing its optimiser state"):
        resumed.train()
    runner(tmp_path / 'tuned', 'tuned', build(w['sd15_v']), 2, load_from=str(tmp_path / 'iter_2.pth'), size=16).train()
