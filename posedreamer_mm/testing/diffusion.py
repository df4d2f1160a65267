"""Tiny offline diffusers components for tests: every backend's weights folder, built from configs.

Nothing downloads: the models are randomly initialised from small configs (``block_out_channels=(4, 8)``, hidden
size 32), the tokenizers are built from in-memory vocabularies, and each setup is written with ``save_pretrained``
into a folder laid out exactly as the real weights are (``model_index.json`` plus one subfolder per component),
so the backends' real ``from_pretrained`` loading code is what the tests run. Images are noise; only shapes,
determinism, loading and wiring are meaningful.

ControlNets are zero-initialised at their outputs, so an untrained one changes nothing; the builders give those
layers small random weights (``trained_like=True``, as a trained ControlNet has) so that tests can see the control.
"""
from __future__ import annotations

import json
import os
import string
from pathlib import Path

import torch

#: Hidden size of every tiny text encoder and the cross-attention width of the tiny UNets.
HIDDEN = 32
_WORDS = ('a photo of a person standing in a park wearing a red shirt and blue jeans studio lighting full body '
          'portrait man woman child old young walking running sitting yoga pose on the street indoor outdoor '
          'blurry low quality cartoon bad anatomy').split()


def tiny_clip_tokenizer():
    """A CLIP BPE tokenizer over single characters (vocab 76), 77 tokens long, built in memory."""
    from transformers import CLIPTokenizer
    chars = string.ascii_lowercase + string.digits + ",.!?'-"
    tokens = ['<|startoftext|>', '<|endoftext|>'] + list(chars) + [c + '</w>' for c in chars]
    vocab = {t: i for i, t in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77, unk_token='<|endoftext|>',
                         pad_token='<|endoftext|>')


def tiny_t5_tokenizer():
    """A T5 (SentencePiece Unigram) tokenizer trained on a few caption words, for FLUX's ``tokenizer_2``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5TokenizerFast
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=['<pad>', '</s>', '<unk>'], unk_token='<unk>')
    tok.train_from_iterator([' '.join(_WORDS)] * 4 + list(_WORDS), trainer=trainer)
    from tokenizers import processors
    tok.post_processor = processors.TemplateProcessing(single='$A </s>', special_tokens=[('</s>', 1)])
    return T5TokenizerFast(tokenizer_object=tok, pad_token='<pad>', eos_token='</s>', unk_token='<unk>',
                           extra_ids=0, model_max_length=512)


def _clip_text(with_projection: bool = False, vocab_size: int = 1000):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    cfg = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=HIDDEN, intermediate_size=37,
                         num_attention_heads=4, num_hidden_layers=2, vocab_size=vocab_size, projection_dim=HIDDEN)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg)


def _vae(latent_channels: int = 4, **kwargs):
    from diffusers import AutoencoderKL
    return AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=latent_channels,
                         down_block_types=('DownEncoderBlock2D',) * 2, up_block_types=('UpDecoderBlock2D',) * 2,
                         layers_per_block=1, norm_num_groups=1, sample_size=32, **kwargs)


def _unet_kwargs(sdxl: bool) -> dict:
    kw = dict(block_out_channels=(4, 8), layers_per_block=1, in_channels=4,
              down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D'), norm_num_groups=1,
              cross_attention_dim=HIDDEN * (2 if sdxl else 1), attention_head_dim=2)
    if sdxl:
        kw.update(addition_embed_type='text_time', addition_time_embed_dim=8,
                  projection_class_embeddings_input_dim=6 * 8 + HIDDEN, use_linear_projection=True,
                  transformer_layers_per_block=(1, 1))
    return kw


def make_trained_like(model: torch.nn.Module, std: float = 0.02, seed: int = 0) -> torch.nn.Module:
    """Gives a ControlNet's zero-initialised output layers (``controlnet_*``, ``*zero*``) small random weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ('controlnet' in name or 'zero' in name) and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def _save(pipe_or_model, out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    pipe_or_model.save_pretrained(out, safe_serialization=True)
    return out


def write_tiny_sd15(out_dir) -> Path:
    """An SD1.5-layout folder (``StableDiffusionPipeline``: unet, vae, text_encoder, tokenizer, scheduler)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel(sample_size=32, out_channels=4, up_block_types=('CrossAttnUpBlock2D', 'UpBlock2D'),
                                  **_unet_kwargs(False)),
        vae=_vae(), text_encoder=_clip_text(), tokenizer=tiny_clip_tokenizer(),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear',
                                clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return _save(pipe, out_dir)


def write_tiny_controlnet(out_dir, sdxl: bool = False, union: bool = False, seed: int = 0) -> Path:
    """A ``ControlNetModel`` (or ``ControlNetUnionModel``) folder matching :func:`write_tiny_sd15`/``_sdxl``."""
    from diffusers import ControlNetModel, ControlNetUnionModel
    torch.manual_seed(seed)
    kw = _unet_kwargs(sdxl or union)
    kw.pop('in_channels')
    cls = ControlNetUnionModel if union else ControlNetModel
    extra = dict(num_control_type=8, num_trans_channel=4, num_trans_head=2, num_proj_channel=4) if union else {}
    model = cls(in_channels=4, conditioning_embedding_out_channels=(16, 32), **kw, **extra)
    return _save(make_trained_like(model, seed=seed), out_dir)


def write_tiny_sdxl(out_dir) -> Path:
    """An SDXL-layout folder (``StableDiffusionXLPipeline``: two CLIP text encoders and tokenizers)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    torch.manual_seed(0)
    pipe = StableDiffusionXLPipeline(
        unet=UNet2DConditionModel(sample_size=32, out_channels=4, up_block_types=('CrossAttnUpBlock2D', 'UpBlock2D'),
                                  **_unet_kwargs(True)),
        vae=_vae(), text_encoder=_clip_text(), text_encoder_2=_clip_text(with_projection=True),
        tokenizer=tiny_clip_tokenizer(), tokenizer_2=tiny_clip_tokenizer(),
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear',
                                         timestep_spacing='leading', steps_offset=1))
    return _save(pipe, out_dir)


def _flux_kwargs() -> dict:
    return dict(patch_size=1, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                joint_attention_dim=HIDDEN, pooled_projection_dim=HIDDEN, axes_dims_rope=[4, 4, 8])


def write_tiny_flux(out_dir, control: bool = False) -> Path:
    """A FLUX-layout folder (``FluxPipeline``: transformer, vae, CLIP + T5 encoders and tokenizers).

    ``control=True`` writes the ``FluxControlPipeline`` form (FLUX.1-Depth/Canny-dev): a transformer whose input
    takes the packed control latents beside the image latents (``in_channels`` 2 x 16, ``out_channels`` 16).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxControlPipeline, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel
    torch.manual_seed(0)
    t5_tok = tiny_t5_tokenizer()
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=HIDDEN, d_ff=37, d_kv=8, num_layers=2,
                                 num_heads=4, decoder_start_token_id=0))
    channels = dict(in_channels=32, out_channels=16) if control else dict(in_channels=16)
    parts = dict(transformer=FluxTransformer2DModel(**channels, **_flux_kwargs()),
                 vae=_vae(latent_channels=4, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
                          scaling_factor=1.5035),
                 text_encoder=_clip_text(), tokenizer=tiny_clip_tokenizer(), text_encoder_2=t5, tokenizer_2=t5_tok,
                 scheduler=FlowMatchEulerDiscreteScheduler())
    pipe = (FluxControlPipeline if control else FluxPipeline)(**parts)
    return _save(pipe, out_dir)


def write_tiny_flux_controlnet(out_dir, seed: int = 0) -> Path:
    """A ``FluxControlNetModel`` folder (InstantX layout: the control image goes through the VAE)."""
    from diffusers import FluxControlNetModel
    torch.manual_seed(seed)
    model = FluxControlNetModel(in_channels=16, **_flux_kwargs())
    return _save(make_trained_like(model, seed=seed), out_dir)


#: Attention projections the tiny LoRAs adapt (as diffusers' own LoRA training scripts do).
LORA_TARGETS = ['to_q', 'to_k', 'to_v', 'to_out.0']



def _add_random_lora(model: torch.nn.Module, config, seed: int) -> None:
    """Adds a peft LoRA to ``model`` with random ``B`` matrices (a fresh LoRA is zero and would change nothing)."""
    model.add_adapter(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'lora_B' in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)

def write_tiny_lora(model_dir, out_dir, rank: int = 2, alpha: float = 4.0, seed: int = 0) -> Path:
    """A LoRA for the denoiser of a tiny pipeline folder or for a ControlNet folder, written as diffusers does.

    ``model_dir`` with ``model_index.json`` gets a pipeline LoRA over its ``unet``/``transformer``
    (``<Pipeline>.save_lora_weights`` with the adapter metadata, so ``alpha != rank`` reloads right); a model folder
    (a ControlNet) gets ``save_lora_adapter``. The LoRA's ``B`` matrices are random (a fresh peft LoRA is zero and
    would change nothing), so loading it at a non-zero weight changes the output.
    """
    import diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    model_dir, out = Path(model_dir), Path(out_dir)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=LORA_TARGETS, init_lora_weights=True)
    if (model_dir / 'model_index.json').is_file():
        index = json.loads((model_dir / 'model_index.json').read_text())
        part = 'unet' if 'unet' in index else 'transformer'
        model_cls = getattr(diffusers, index[part][1])
        model = model_cls.from_pretrained(model_dir / part)
    else:
        part = None
        model = getattr(diffusers, json.loads((model_dir / 'config.json').read_text())['_class_name']).from_pretrained(
            model_dir)
    _add_random_lora(model, config, seed)
    if part is None:
        model.save_lora_adapter(out)
        return out
    pipe_cls = getattr(diffusers, index['_class_name'])
    pipe_cls.save_lora_weights(out, **{f'{part}_lora_layers': get_peft_model_state_dict(model),
                                       f'{part}_lora_adapter_metadata': config.to_dict()})
    return out


def write_tiny_weights(root) -> dict[str, Path]:
    """Every tiny setup the backend tests use, under ``root`` (about 1 s on one core).

    Returns:
        ``sd15``, ``sdxl``, ``flux``, ``flux_control`` pipeline folders; ``controlnet_sd15``, ``controlnet_sd15_b``,
        ``controlnet_sdxl``, ``controlnet_union``, ``controlnet_flux``, ``controlnet_flux_b`` model folders.
    """
    root = Path(root)
    return dict(sd15=write_tiny_sd15(root / 'sd15'), sdxl=write_tiny_sdxl(root / 'sdxl'),
                flux=write_tiny_flux(root / 'flux'), flux_control=write_tiny_flux(root / 'flux_control', control=True),
                controlnet_sd15=write_tiny_controlnet(root / 'cn_sd15'),
                controlnet_sd15_b=write_tiny_controlnet(root / 'cn_sd15_b', seed=1),
                controlnet_sdxl=write_tiny_controlnet(root / 'cn_sdxl', sdxl=True),
                controlnet_union=write_tiny_controlnet(root / 'cn_union', union=True),
                controlnet_flux=write_tiny_flux_controlnet(root / 'cn_flux'),
                controlnet_flux_b=write_tiny_flux_controlnet(root / 'cn_flux_b', seed=1))


def write_tiny_flux_control_lora(out_dir, rank: int = 4, seed: int = 0) -> Path:
    """A FLUX control LoRA (as FLUX.1-Depth-dev-lora): a LoRA whose ``x_embedder`` reads image + control latents.

    Its ``x_embedder.lora_A`` takes 2 x 16 input channels, so loading it into the plain tiny FLUX
    (:func:`write_tiny_flux`, 16 channels) makes ``FluxControlPipeline.load_lora_weights`` widen the transformer's
    input layer, as with the real FLUX.1-dev + control LoRA.
    """
    from diffusers import FluxControlPipeline, FluxTransformer2DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    torch.manual_seed(seed)
    model = FluxTransformer2DModel(in_channels=32, out_channels=16, **_flux_kwargs())
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=['x_embedder'] + LORA_TARGETS)
    _add_random_lora(model, config, seed)
    out = Path(out_dir)
    FluxControlPipeline.save_lora_weights(out, transformer_lora_layers=get_peft_model_state_dict(model),
                                          transformer_lora_adapter_metadata=config.to_dict())
    return out


def write_tiny_easycontrol_lora(flux_dir, out_file, rank: int = 4, cond_size: int = 32, seed: int = 0) -> Path:
    """An EasyControl condition LoRA file for the tiny FLUX of :func:`write_tiny_flux`, with random ``up``
    matrices (a fresh one adds nothing to the condition tokens), written as ``EasyControlTrainer`` writes it."""
    from diffusers import FluxTransformer2DModel

    from posedreamer_mm.models.editors.easycontrol import add_condition_lora, save_condition_lora
    transformer = FluxTransformer2DModel.from_pretrained(Path(flux_dir) / 'transformer')
    lora = add_condition_lora(transformer, rank)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(lora.named_parameters()):
            if name.endswith('up.weight'):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return save_condition_lora(transformer, out_file, cond_size)
