"""Backend-specific behaviour beyond the shared contract: weights layouts, LoRA stacks, schedulers, the baseline."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from posedreamer_mm.generation.backends import WeightsLayoutError
from posedreamer_mm.generation.backends.render import (
    _BONE_IDX,
    REGION_OF_JOINT,
    RenderBackend,
    dominant_joints_from_bones,
    procedural_background,
)
from posedreamer_mm.registry import BACKENDS, BODY_MODELS
from posedreamer_mm.testing.contracts import prepared_results
from posedreamer_mm.testing.diffusion import write_tiny_flux_control_lora, write_tiny_lora, write_tiny_weights

CPU = dict(device='cpu', dtype='float32', num_inference_steps=2, batch_size=4)


@pytest.fixture(scope='module')
def w(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp('tiny_backends')
    weights = write_tiny_weights(root)
    weights['lora_a'] = write_tiny_lora(weights['sd15'], root / 'lora_a', rank=2, alpha=4.0, seed=1)
    weights['lora_b'] = write_tiny_lora(weights['sd15'], root / 'lora_b', rank=4, alpha=2.0, seed=2)
    weights['lora_cn'] = write_tiny_lora(weights['controlnet_sd15'], root / 'lora_cn', seed=3)
    weights['lora_flux'] = write_tiny_lora(weights['flux'], root / 'lora_flux', seed=4)
    weights['flux_control_lora'] = write_tiny_flux_control_lora(root / 'flux_control_lora')
    return weights


@pytest.fixture(scope='module')
def batch(standin_model_dir):
    return prepared_results(
        source=dict(type='AugmentedSource', source=dict(type='ProceduralPoseSource', num_samples=6, seed=1), seed=1,
                    distance_range=(2.5, 4.0)),
        body_model=dict(type='SMPLXBodyModel', model_path=str(standin_model_dir)),
        controls=[dict(type='PNCCRenderer'), dict(type='DepthRenderer')], size=64, num=4)


def sd15(w, **kw):
    return BACKENDS.build(dict(type='SD15ControlNetBackend', weights=w['sd15'], **CPU,
                                 controlnets=dict(weights=w['controlnet_sd15'], control_type='pncc'), **kw))


def float_images(backend, batch):
    """The pipeline's float output (before uint8 rounding) for the backend's own call arguments."""
    kwargs = backend.call_arguments(batch)  # sets the backend up
    with torch.inference_mode():
        return backend.pipe(**kwargs).images


# --- weights layouts ----------------------------------------------------------------------------------------------
def test_missing_weights_folder_names_path_and_layout(w, tmp_path):
    backend = BACKENDS.build(dict(type='SD15ControlNetBackend', weights=tmp_path / 'nope', **CPU,
                                    controlnets=dict(weights=w['controlnet_sd15'], control_type='pncc')))
    with pytest.raises(WeightsLayoutError, match=r'nope does not exist.*model_index\.json.*_class_name'):
        backend.setup()


def _edit_safetensors(folder, edit):
    from safetensors.torch import save_file
    (file,) = folder.glob('*.safetensors')
    state = load_file(file)
    edit(state)
    save_file(state, file)


def test_weights_that_do_not_match_the_model_are_refused_not_left_random(w, tmp_path):
    """diffusers' from_pretrained only logs a missing key and leaves that layer random: a ControlNet missing its
    conditioning embedding, or a UNet with a layer of another shape, must stop the backend instead."""
    cn = tmp_path / 'cn'
    shutil.copytree(w['controlnet_sd15'], cn)
    gone = 'controlnet_cond_embedding.conv_in.weight'
    _edit_safetensors(cn, lambda state: state.pop(gone))
    backend = BACKENDS.build(dict(type='SD15ControlNetBackend', weights=w['sd15'], **CPU,
                                  controlnets=dict(weights=cn, control_type='pncc')))
    with pytest.raises(WeightsLayoutError, match=rf"cn: the weights do not match ControlNetModel.*1 missing "
                                                 rf"\['{gone}'\]"):
        backend.setup()
    sd = tmp_path / 'sd15'
    shutil.copytree(w['sd15'], sd)

    def edit(state):  # (a layer of another shape diffusers refuses itself)
        state.pop('conv_out.bias')
        state['stray.weight'] = torch.zeros(1)
    _edit_safetensors(sd / 'unet', edit)
    backend = BACKENDS.build(dict(type='SD15ControlNetBackend', weights=sd, **CPU,
                                  controlnets=dict(weights=w['controlnet_sd15'], control_type='pncc')))
    with pytest.raises(WeightsLayoutError, match=r"unet: the weights do not match UNet2DConditionModel.*1 missing "
                                                 r"\['conv_out.bias'\], 1 unexpected \['stray.weight'\]"):
        backend.setup()
    sd15(w).setup()  # the untouched weights load


def test_wrong_pipeline_type_names_found_and_expected(w):
    backend = BACKENDS.build(dict(type='SD15ControlNetBackend', weights=w['sdxl'], **CPU,
                                    controlnets=dict(weights=w['controlnet_sd15'], control_type='pncc')))
    with pytest.raises(WeightsLayoutError, match=r"'StableDiffusionXLPipeline' pipeline.*StableDiffusionPipeline"):
        backend.setup()


def test_missing_component_subfolder(w, tmp_path):
    broken = tmp_path / 'sd15'
    shutil.copytree(w['sd15'], broken)
    shutil.rmtree(broken / 'tokenizer')
    with pytest.raises(WeightsLayoutError, match=r"lacks the component subfolders \['tokenizer'\]"):
        sd15(dict(w, sd15=broken)).setup()


def test_controlnet_path_errors(w, tmp_path):
    with pytest.raises(WeightsLayoutError, match='pipeline folder: point at its model subfolder'):
        sd15(dict(w, controlnet_sd15=w['sd15'])).setup()
    with pytest.raises(WeightsLayoutError, match=r"'ControlNetUnionModel' model.*\['ControlNetModel'\]"):
        sd15(dict(w, controlnet_sd15=w['controlnet_union'])).setup()
    empty = tmp_path / 'cn'
    empty.mkdir()
    (empty / 'config.json').write_text(json.dumps({'_class_name': 'ControlNetModel'}))
    with pytest.raises(WeightsLayoutError, match='no diffusion_pytorch_model'):
        sd15(dict(w, controlnet_sd15=empty)).setup()
    text = tmp_path / 'weights.txt'
    text.write_text('x')
    with pytest.raises(WeightsLayoutError, match='not a checkpoint'):
        sd15(dict(w, sd15=text)).setup()


def test_bad_lora_and_config_errors(w, tmp_path):
    with pytest.raises(WeightsLayoutError, match="LoRA 'lora0'.*missing does not exist.*pytorch_lora_weights"):
        sd15(w, loras=[dict(path=tmp_path / 'missing')]).setup()
    with pytest.raises(ValueError, match='unique'):
        sd15(w, loras=[dict(path=w['lora_a'], name='x'), dict(path=w['lora_b'], name='x')])
    with pytest.raises(ValueError, match='needs weights and control_type'):
        BACKENDS.build(dict(type='SD15ControlNetBackend', weights=w['sd15'], controlnets=dict(weights='x')))
    with pytest.raises(ValueError, match=r"no Union control mode for \['pncc'\]"):
        BACKENDS.build(dict(type='SDXLControlNetUnionBackend', weights=w['sdxl'],
                              controlnet=dict(weights=w['controlnet_union']), control_types=['pncc']))
    with pytest.raises(ValueError, match='dtype'):
        BACKENDS.build(dict(type='SD15ControlNetBackend', weights=w['sd15'], dtype='float8',
                              controlnets=dict(weights=w['controlnet_sd15'], control_type='pncc')))


def test_bad_lora_files_are_named(w, tmp_path):
    corrupt = tmp_path / 'corrupt'
    corrupt.mkdir()
    (corrupt / 'pytorch_lora_weights.safetensors').write_bytes(b'not a safetensors file')
    with pytest.raises(WeightsLayoutError, match=f"LoRA 'lora0' at {corrupt} could not be loaded"):
        sd15(w, loras=[dict(path=corrupt)]).setup()
    # diffusers only warns when no key matches: a FLUX LoRA on SD1.5 would silently do nothing
    with pytest.raises(WeightsLayoutError, match='matched no module of StableDiffusionControlNetPipeline'):
        sd15(w, loras=[dict(path=w['lora_flux'])]).setup()
    with pytest.raises(WeightsLayoutError, match='ControlNet LoRA .* could not be loaded into ControlNetModel'):
        sd15(w, loras=[dict(path=w['lora_a'], target='controlnet')]).setup()


def test_corrupt_model_index(w, tmp_path):
    broken = tmp_path / 'sd15'
    shutil.copytree(w['sd15'], broken)
    (broken / 'model_index.json').write_text('{"_class_name": ')
    with pytest.raises(WeightsLayoutError, match='model_index.json is not a readable JSON file'):
        sd15(dict(w, sd15=broken)).setup()


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on a machine without CUDA')
def test_cuda_without_a_gpu_is_explained(w):
    with pytest.raises(RuntimeError, match="no CUDA device; set backend.device='cpu'"):
        BACKENDS.build(dict(type='SD15ControlNetBackend', weights=w['sd15'], device='cuda',
                              controlnets=dict(weights=w['controlnet_sd15'], control_type='pncc'))).setup()


def test_flux_control_needs_a_control_transformer(w):
    backend = BACKENDS.build(dict(type='FluxControlBackend', weights=w['flux'], control_type='depth', **CPU))
    with pytest.raises(ValueError, match='no control input.*control LoRA'):
        backend.setup()


def test_flux_control_lora_on_plain_flux_with_a_stacked_lora(w, batch):
    """FLUX.1-dev + control LoRA (diffusers widens the input layer) + a style LoRA on top, each with its weight."""
    cfg = dict(type='FluxControlBackend', weights=w['flux'], control_type='depth', **CPU)
    control = [dict(path=w['flux_control_lora'], name='control')]
    backend = BACKENDS.build(dict(cfg, loras=control + [dict(path=w['lora_flux'], weight=0.5, name='style')]))
    images = backend.generate(batch)
    assert images[0].shape == (64, 64, 3)
    flipped = dict(batch[0], controls={k: 255 - v for k, v in batch[0]['controls'].items()})
    assert np.abs(backend.generate([flipped])[0].astype(int) - images[0]).max() > 0  # the control is read
    no_style = BACKENDS.build(dict(cfg, loras=control)).generate(batch[:1])[0]
    assert not np.array_equal(no_style, images[0])
    assert [lo['name'] for lo in backend.record()['loras']] == ['control', 'style']


def test_size_must_fit_the_latent_grid(w, batch):
    backend = sd15(w)
    odd = dict(batch[0], controls={k: np.ascontiguousarray(v[:63, :63]) for k, v in batch[0]['controls'].items()})
    with pytest.raises(ValueError, match='multiple of 2'):
        backend.generate([odd])


# --- seeds ----------------------------------------------------------------------------------------------------
def test_sample_generators_one_per_seed():
    from posedreamer_mm.generation.backends import sample_generators
    gens = sample_generators([7, 7 + 2 ** 63, -1, 2 ** 64 - 1])
    draws = [torch.randn(3, generator=g) for g in gens]
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)  # seeds are taken modulo 2**63
    torch.testing.assert_close(draws[2], draws[3], rtol=0, atol=0)  # -1 == 2**64 - 1 (mod 2**63)
    torch.testing.assert_close(draws[0], torch.randn(3, generator=torch.Generator().manual_seed(7)), rtol=0, atol=0)
    assert all(g.device.type == 'cpu' for g in gens)



@pytest.mark.parametrize('kind', ['sd15', 'flux'])
def test_batch_independence_to_float_rounding(w, batch, kind):
    """Per-sample generators make the noise identical; the rest differs only by float32 kernel rounding."""
    backend = sd15(w) if kind == 'sd15' else BACKENDS.build(dict(
        type='FluxControlNetBackend', weights=w['flux'], controlnets=dict(weights=w['controlnet_flux'],
                                                                          control_type='pncc'), **CPU))
    together = float_images(backend, batch)
    alone = float_images(backend, [batch[3]])
    np.testing.assert_allclose(together[3], alone[0], atol=1e-5, rtol=0)


# --- schedulers, switches, record ---------------------------------------------------------------------------------
def test_scheduler_by_class_name_and_record(w, batch):
    backend = sd15(w, scheduler=dict(type='UniPCMultistepScheduler', solver_order=1), guidance_scale=3.0)
    before = backend.record()
    assert (before['scheduler'], before['scheduler_overrides']) == ('UniPCMultistepScheduler', {'solver_order': 1})
    backend.setup()
    pipe = backend.pipe
    backend.setup()
    assert backend.pipe is pipe  # idempotent
    assert type(pipe.scheduler).__name__ == 'UniPCMultistepScheduler' and pipe.scheduler.config.solver_order == 1
    record = backend.record()
    assert record == before  # the record never depends on whether the backend was set up
    assert sd15(w).record()['scheduler'] == 'DDIMScheduler'  # the weights' own, read from their folder
    assert (record['steps'], record['guidance'], record['dtype']) == (2, 3.0, 'float32')
    assert record['weights'] == str(w['sd15']) and record['controlnets'][0]['control_type'] == 'pncc'
    json.dumps(record)
    assert not np.array_equal(backend.generate(batch[:1])[0], sd15(w).generate(batch[:1])[0])
    with pytest.raises(ValueError, match='not a diffusers scheduler.*compatible.*DDIMScheduler'):
        sd15(w, scheduler='NoSuchScheduler').setup()


def test_channels_last_same_images(w, batch):
    base = float_images(sd15(w), batch[:2])
    np.testing.assert_allclose(float_images(sd15(w, channels_last=True), batch[:2]), base, atol=1e-5)


def test_torch_compile_switch_same_images(w, batch):
    """The compile switch wraps the denoiser and ControlNet; dynamo's eager backend checks the wiring quickly."""
    base = float_images(sd15(w), batch[:2])
    compiled = sd15(w, compile=dict(backend='eager'))
    np.testing.assert_allclose(float_images(compiled, batch[:2]), base, atol=1e-5)
    assert hasattr(compiled.pipe.unet, '_orig_mod') and hasattr(compiled.pipe.controlnet, '_orig_mod')


@pytest.mark.slow
def test_torch_compile_inductor_same_images(w, batch):
    base = float_images(sd15(w), batch[:2])
    np.testing.assert_allclose(float_images(sd15(w, compile=True), batch[:2]), base, atol=1e-4)


# --- LoRA stacking --------------------------------------------------------------------------------------------------
def merged_unet_reference(w, loras: list[tuple[str, float, float, int]], batch):
    """Images from a plain pipeline whose UNet weights are W + sum_i weight_i * alpha_i / r_i * B_i @ A_i."""
    backend = sd15(w)
    backend.setup()
    state = backend.pipe.unet.state_dict()
    with torch.no_grad():
        for path, weight, alpha, rank in loras:
            lora = load_file(str(path / 'pytorch_lora_weights.safetensors'))
            for key in [k for k in lora if k.endswith('lora_A.weight')]:
                target = key[len('unet.'):-len('.lora_A.weight')] + '.weight'
                delta = lora[key.replace('lora_A', 'lora_B')] @ lora[key]
                state[target] += weight * alpha / rank * delta
    backend.pipe.unet.load_state_dict(state)
    return float_images(backend, batch)


def test_lora_stack_equals_merged_weights(w, batch):
    stacked = sd15(w, loras=[dict(path=w['lora_a'], weight=0.5, name='dpo'),
                             dict(path=w['lora_b'], weight=0.8, name='style')])
    got = float_images(stacked, batch[:2])
    ref = merged_unet_reference(w, [(w['lora_a'], 0.5, 4.0, 2), (w['lora_b'], 0.8, 2.0, 4)], batch[:2])
    np.testing.assert_allclose(got, ref, atol=2e-5)
    base = float_images(sd15(w), batch[:2])
    assert np.abs(got - base).max() > 1e-2  # the LoRAs do change the image
    assert [lo['weight'] for lo in stacked.record()['loras']] == [0.5, 0.8]


def test_zero_weight_loras_equal_base(w, batch):
    base = float_images(sd15(w), batch[:2])
    zero = sd15(w, loras=[dict(path=w['lora_a'], weight=0.0), dict(path=w['lora_b'], weight=0.0)])
    np.testing.assert_allclose(float_images(zero, batch[:2]), base, atol=1e-6)


def test_controlnet_lora(w, batch):
    base = float_images(sd15(w), batch[:2])
    on = float_images(sd15(w, loras=[dict(path=w['lora_cn'], weight=1.0, target='controlnet')]), batch[:2])
    off = float_images(sd15(w, loras=[dict(path=w['lora_cn'], weight=0.0, target='controlnet')]), batch[:2])
    np.testing.assert_allclose(off, base, atol=1e-6)
    assert np.abs(on - base).max() > 1e-4
    with pytest.raises(ValueError, match='controlnet_index 1 out of range'):
        sd15(w, loras=[dict(path=w['lora_cn'], target='controlnet', controlnet_index=1)]).setup()


def test_flux_lora_loads_and_changes_image(w, batch):
    cfg = dict(type='FluxControlNetBackend', weights=w['flux'], **CPU,
               controlnets=dict(weights=w['controlnet_flux'], control_type='pncc'))
    base = float_images(BACKENDS.build(cfg), batch[:1])
    lora = float_images(BACKENDS.build(dict(cfg, loras=[dict(path=w['lora_flux'], weight=0.7)])), batch[:1])
    assert np.abs(lora - base).max() > 1e-4


# --- the rendering baseline ---------------------------------------------------------------------------------------
def test_render_baseline_composites_at_the_control_silhouette(batch):
    """Outside the depth control's silhouette the image is the seed's background, inside it the lit body."""
    backend = RenderBackend(batch_size=4)
    images = backend.generate(batch)
    for img, results in zip(images, batch):
        background = procedural_background(np.random.default_rng(int(results['seed']) % 2 ** 63), img.shape[:2])
        body = results['controls']['depth'][..., 0] > 0
        np.testing.assert_array_equal(img[~body], np.round(background[~body] * 255).astype(np.uint8))
        assert (np.abs(img[body].astype(int) - np.round(background[body] * 255)).sum(-1) > 0).mean() > 0.95
    assert 'not diffusion' in backend.record()['kind']


def test_bone_labels_match_skinning_weights(standin_model_dir, batch):
    """The nearest-bone stand-in for skinning weights gives the same clothing region on most vertices."""
    model = BODY_MODELS.build(dict(type='SMPLXBodyModel', model_path=str(standin_model_dir)))
    skin = model.smplx.lbs_weights.argmax(1).numpy()
    for results in batch[:2]:
        bones = dominant_joints_from_bones(results['vertices'].astype(np.float64), results['joints'])
        agree = (REGION_OF_JOINT[bones] == REGION_OF_JOINT[skin]).mean()
        assert agree > 0.9, agree
    with_skin = RenderBackend(batch_size=4, body_model=model)
    with_skin.setup()
    assert with_skin.record()['part_labels'] == 'skinning weights'
    assert len(with_skin.generate(batch)) == 4


def test_nearest_bone_against_brute_force():
    """Each vertex gets a joint whose bone is the nearest segment (ties between bones sharing a joint aside)."""
    rng = np.random.default_rng(0)
    vertices, joints = rng.normal(0, 0.5, (500, 3)), rng.normal(0, 0.5, (127, 3))
    a, ab = joints[_BONE_IDX[:, 0]], joints[_BONE_IDX[:, 1]] - joints[_BONE_IDX[:, 0]]
    dist = np.empty((len(vertices), len(a)))
    for k in range(len(a)):  # point-to-segment distance, one bone at a time
        t = np.clip((vertices - a[k]) @ ab[k] / max(ab[k] @ ab[k], 1e-12), 0, 1)
        dist[:, k] = np.linalg.norm(vertices - a[k] - t[:, None] * ab[k], axis=1)
    got = dominant_joints_from_bones(vertices, joints)
    chosen = np.array([dist[i, _BONE_IDX[:, 0] == got[i]].min() for i in range(len(vertices))])
    np.testing.assert_allclose(chosen, dist.min(1), atol=1e-5)


def test_render_baseline_rejects_nan(batch):
    bad = dict(batch[0], vertices=np.full_like(batch[0]['vertices'], np.nan))
    with pytest.raises(ValueError, match='non-finite'):
        RenderBackend().generate([bad])
