"""EasyControl on diffusers' FluxTransformer2DModel: the two passes against the reference's joint masked forward,
the trainer, and the condition-LoRA files."""
import pytest
import torch
import torch.nn.functional as F
from diffusers import FluxTransformer2DModel
from diffusers.models.embeddings import apply_rotary_emb
from safetensors.torch import load_file, save_file

from posedreamer_mm.models.editors.easycontrol import (
    EasyControlTrainer,
    add_condition_lora,
    condition_ids,
    load_condition_lora,
    run_condition_pass,
)
from posedreamer_mm.models.editors.flux_control import latent_ids
from posedreamer_mm.testing.diffusion import write_tiny_flux

SIZE, COND = 32, 16  # image and condition sides in pixels (the tiny VAE is 2x): 8 x 8 and 4 x 4 latents


@pytest.fixture(scope='module')
def flux_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return write_tiny_flux(tmp_path_factory.mktemp('tiny_flux_ec') / 'flux')


def seeded(module, seed=0, std=0.2):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * std)


# --- the reference's computation, transcribed: one forward with the condition tokens in the image stream ----------
def _heads(attn, x):
    return x.unflatten(-1, (-1, attn.head_dim))


def _joint_attention(attn, proc, x, cond, rope, context=None):
    """Image-stream projections for ``x`` and the condition tokens, the LoRA on the condition rows only, text
    projections for ``context``; condition rows may attend only to condition columns (the reference's mask)."""
    lo = {k: getattr(proc, f'{k}_loras')[0] for k in 'qkv'}
    q = torch.cat([attn.to_q(x), attn.to_q(cond) + lo['q'](cond)], 1)
    k = torch.cat([attn.to_k(x), attn.to_k(cond) + lo['k'](cond)], 1)
    v = _heads(attn, torch.cat([attn.to_v(x), attn.to_v(cond) + lo['v'](cond)], 1))
    q, k = attn.norm_q(_heads(attn, q)), attn.norm_k(_heads(attn, k))
    if context is not None:
        q = torch.cat([attn.norm_added_q(_heads(attn, attn.add_q_proj(context))), q], 1)
        k = torch.cat([attn.norm_added_k(_heads(attn, attn.add_k_proj(context))), k], 1)
        v = torch.cat([_heads(attn, attn.add_v_proj(context)), v], 1)
    q, k = apply_rotary_emb(q, rope, sequence_dim=1), apply_rotary_emb(k, rope, sequence_dim=1)
    s, n = q.shape[1], cond.shape[1]
    allowed = torch.ones(s, s, dtype=torch.bool)
    allowed[s - n:, :s - n] = False
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=allowed)
    return out.transpose(1, 2).flatten(2)


def reference_forward(tr, img_tokens, cond_tokens, txt, pooled, t, img_ids, cond_ids, txt_ids):
    """EasyControl's transformer: condition tokens beside the image tokens, modulated with the timestep-0
    embedding, block-causal attention, the LoRA on condition tokens (its double- and single-stream blocks)."""
    temb, temb0 = tr.time_text_embed(t * 1000, pooled), tr.time_text_embed(t * 0, pooled)
    img, cond, txt = tr.x_embedder(img_tokens), tr.x_embedder(cond_tokens), tr.context_embedder(txt)
    rope = tr.pos_embed(torch.cat([txt_ids, img_ids, cond_ids]))
    nt, ni, nc = txt.shape[1], img.shape[1], cond.shape[1]
    for blk in tr.transformer_blocks:
        proc = blk.attn.processor
        x, g, sh, sc, gm = blk.norm1(img, emb=temb)
        xc, cg, csh, csc, cgm = blk.norm1(cond, emb=temb0)
        xt, tg, tsh, tsc, tgm = blk.norm1_context(txt, emb=temb)
        ot, oi, oc = _joint_attention(blk.attn, proc, x, xc, rope, context=xt).split([nt, ni, nc], 1)
        oi, oc, ot = blk.attn.to_out[0](oi), blk.attn.to_out[0](oc), blk.attn.to_add_out(ot)
        oc = oc + proc.proj_loras[0](oc)
        img = img + g[:, None] * oi
        img = img + gm[:, None] * blk.ff(blk.norm2(img) * (1 + sc[:, None]) + sh[:, None])
        cond = cond + cg[:, None] * oc
        cond = cond + cgm[:, None] * blk.ff(blk.norm2(cond) * (1 + csc[:, None]) + csh[:, None])
        txt = txt + tg[:, None] * ot
        txt = txt + tgm[:, None] * blk.ff_context(blk.norm2_context(txt) * (1 + tsc[:, None]) + tsh[:, None])
    for blk in tr.single_transformer_blocks:
        x = torch.cat([txt, img], 1)
        nx, gate = blk.norm(x, emb=temb)
        ncd, cgate = blk.norm(cond, emb=temb0)
        ox, oc = _joint_attention(blk.attn, blk.attn.processor, nx, ncd, rope).split([nt + ni, nc], 1)
        x = x + gate[:, None] * blk.proj_out(torch.cat([ox, blk.act_mlp(blk.proj_mlp(nx))], 2))
        cond = cond + cgate[:, None] * blk.proj_out(torch.cat([oc, blk.act_mlp(blk.proj_mlp(ncd))], 2))
        txt, img = x.split([nt, ni], 1)
    return tr.proj_out(tr.norm_out(img, temb))


def _inputs(tr, seed=0):
    gen = torch.Generator().manual_seed(seed)
    f = tr.config.in_channels
    return dict(img=torch.randn(2, 16, f, generator=gen), cond=torch.randn(2, 4, f, generator=gen),
                txt=torch.randn(2, 5, tr.config.joint_attention_dim, generator=gen),
                pooled=torch.randn(2, tr.config.pooled_projection_dim, generator=gen), t=torch.tensor([0.2, 0.7]))


def test_two_passes_equal_the_reference_joint_masked_forward(flux_dir):
    tr = FluxTransformer2DModel.from_pretrained(flux_dir / 'transformer')
    seeded(add_condition_lora(tr, rank=4, alpha=8.0))
    x = _inputs(tr)
    img_ids, cids, txt_ids = latent_ids(8, 8), condition_ids(4, 4, 8, 8), torch.zeros(5, 3)
    with torch.no_grad():
        expected = reference_forward(tr, x['img'], x['cond'], x['txt'], x['pooled'], x['t'], img_ids, cids, txt_ids)
        cache = run_condition_pass(tr, x['cond'], cids, x['pooled'], None)
        got = tr(hidden_states=x['img'], encoder_hidden_states=x['txt'], pooled_projections=x['pooled'],
                 timestep=x['t'], img_ids=img_ids, txt_ids=txt_ids, joint_attention_kwargs=dict(easycontrol=cache),
                 return_dict=False)[0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - tr(hidden_states=x['img'], encoder_hidden_states=x['txt'], pooled_projections=x['pooled'],
                     timestep=x['t'], img_ids=img_ids, txt_ids=txt_ids, return_dict=False)[0]).abs().max() > 1e-3


def test_without_a_condition_the_processors_compute_plain_flux(flux_dir):
    base = FluxTransformer2DModel.from_pretrained(flux_dir / 'transformer')
    tr = FluxTransformer2DModel.from_pretrained(flux_dir / 'transformer')
    seeded(add_condition_lora(tr, rank=4))
    x = _inputs(tr, seed=1)
    kw = dict(hidden_states=x['img'], encoder_hidden_states=x['txt'], pooled_projections=x['pooled'],
              timestep=x['t'], img_ids=latent_ids(8, 8), txt_ids=torch.zeros(5, 3), return_dict=False)
    with torch.no_grad():
        torch.testing.assert_close(tr(**kw)[0], base(**kw)[0], rtol=0, atol=1e-6)


def test_condition_ids_lie_on_the_image_token_grid():
    # a 4 x 4 condition latent (2 x 2 tokens) on an 8 x 12 image latent (4 x 6 tokens): rows x2, columns x3
    ids = condition_ids(4, 4, 8, 12)
    assert ids.tolist() == [[0, 0, 0], [0, 0, 3], [0, 2, 0], [0, 2, 3]]


def trainer(flux_dir, **kw):
    return EasyControlTrainer(pretrained=flux_dir, **dict(dict(rank=4, cond_size=COND, max_sequence_length=16), **kw))


def batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (dict(image=torch.rand(2, 3, SIZE, SIZE, generator=gen) * 2 - 1,
                 control=torch.rand(2, 3, SIZE, SIZE, generator=gen)), dict(prompt=['a man', 'a woman']))


def test_trainer_trains_only_the_condition_lora_and_the_loss_falls(flux_dir):
    model = trainer(flux_dir, rank=8)
    names = set(model.state_dict())
    assert names and all('_loras.0.' in n for n in names)
    inputs, samples = batch()
    cond = model.encode_prompts(samples['prompt'], train=False)
    control = model.encode_controls(inputs['control'], train=False)
    assert control['tokens'].shape == (2, (COND // 4) ** 2, 16)  # the condition at its own fixed size
    latents = model.encode_images(inputs['image'])
    gen = torch.Generator().manual_seed(3)
    noise, t = model.sample_noise(latents, gen), model.sample_timesteps(2, 'cpu', gen)
    frozen = {k: v.clone() for k, v in model.transformer.state_dict().items() if '_loras' not in k}
    optim = torch.optim.AdamW(model.parameters(), lr=5e-2)
    losses = []
    for _ in range(10):
        loss = model.per_sample_loss(latents, noise, t, cond, control).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0], losses
    now = model.transformer.state_dict()
    assert all(torch.equal(v, now[k]) for k, v in frozen.items())


def test_gradient_checkpointing_gives_the_same_gradients(flux_dir):
    """The denoising pass reads the condition pass's keys and values from outside its blocks: with checkpointing
    the recomputed blocks must still connect the gradient to the condition LoRA."""
    grads = []
    for ckpt in (False, True):
        model = trainer(flux_dir, gradient_checkpointing=ckpt)
        seeded(model.condition_lora)
        model.train()
        model(*batch())['loss'].backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)  # DDP needs every one
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert any(g.abs().sum() > 0 for n, g in grads[0].items() if 'down' in n)
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-6)


def test_saved_file_has_the_reference_layout_and_reloads(flux_dir, tmp_path):
    model = trainer(flux_dir, alpha=2.0)
    seeded(model.condition_lora, seed=4)
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / 'lora.safetensors')
    assert 'transformer_blocks.0.attn.processor.proj_loras.0.up.weight' in state
    assert 'single_transformer_blocks.0.attn.processor.q_loras.0.down.weight' in state
    assert not any('single' in k and 'proj_loras' in k for k in state)  # single blocks have no output projection
    tr = FluxTransformer2DModel.from_pretrained(flux_dir / 'transformer')
    meta = load_condition_lora(tr, tmp_path / 'lora.safetensors')
    assert meta['cond_size'] == str(COND)
    proc = tr.transformer_blocks[0].attn.processor
    assert proc.q_loras[0].alpha == 2.0
    torch.testing.assert_close(proc.k_loras[0].up.weight, model.transformer.transformer_blocks[0].attn.processor
                               .k_loras[0].up.weight.detach())
    # the reference writes no metadata and trains with alpha = rank
    save_file(state, tmp_path / 'ref.safetensors')
    load_condition_lora(tr, tmp_path / 'ref.safetensors')
    assert tr.transformer_blocks[0].attn.processor.q_loras[0].alpha == 4.0


def test_a_lora_of_another_model_is_refused_naming_the_file(flux_dir, tmp_path):
    model = trainer(flux_dir)
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / 'lora.safetensors')
    state.pop('transformer_blocks.0.attn.processor.v_loras.0.up.weight')
    save_file(state, tmp_path / 'cut.safetensors')
    tr = FluxTransformer2DModel.from_pretrained(flux_dir / 'transformer')
    with pytest.raises(ValueError, match=r'cut\.safetensors does not fit.*1 missing.*v_loras'):
        load_condition_lora(tr, tmp_path / 'cut.safetensors')
    with pytest.raises(ValueError, match='must be a multiple of 4'):
        trainer(flux_dir, cond_size=18)


def test_bfloat16_run_trains_and_its_validation_pipeline_generates(flux_dir):
    model = trainer(flux_dir, weight_dtype='bfloat16', gradient_checkpointing=True)
    model.train()
    inputs, samples = batch()
    model(inputs, samples)['loss'].backward()
    assert all(p.dtype == torch.float32 and p.grad is not None for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        images = model.build_pipeline()(prompt=samples['prompt'], control_image=inputs['control'], height=SIZE,
                                        width=SIZE, num_inference_steps=1, output_type='np').images
    assert images.shape == (2, SIZE, SIZE, 3) and torch.isfinite(torch.from_numpy(images)).all()
