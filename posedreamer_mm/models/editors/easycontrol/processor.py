"""EasyControl's condition LoRA on diffusers' ``FluxTransformer2DModel``, through attention processors only.

EasyControl (Zhang et al. 2025, https://arxiv.org/abs/2503.07027) feeds a control image to FLUX as extra
*condition tokens*: the control, resized to a fixed condition size (512 px) whatever the image size, VAE-encoded
and packed like the image latents, with position ids stretched onto the image's grid. In every attention layer

- the condition tokens get a LoRA on their query/key/value projections (and, in the double-stream blocks, on the
  output projection); text and image tokens get none, so the base model is untouched where there is no condition;
- a causal mask lets text and image tokens attend to the condition tokens, while condition tokens attend only to
  condition tokens;
- the condition tokens are modulated (AdaLN) with the timestep-0 embedding: the control is a clean image.

diffusers' blocks cannot hold condition tokens in the image stream: a block modulates all its image-stream
tokens with one timestep embedding per sample, and condition tokens need the timestep-0 one. The mask makes that
unnecessary: since condition tokens never attend to text or image tokens, their features depend only on the
condition (and the pooled prompt and guidance embeddings). So the model runs in two passes through the *unchanged*
transformer with :class:`EasyControlAttnProcessor` in every attention layer:

1. **condition pass** (:func:`run_condition_pass`): the transformer on the condition tokens alone (no text tokens,
   timestep 0): each processor adds its LoRA and records its layer's keys and values (after the q/k norms and the
   rotary embedding) in a :class:`ConditionCache`;
2. **denoising pass**: the ordinary forward on text + image tokens at timestep ``t``, with ``joint_attention_kwargs=
   dict(easycontrol=cache)``: each processor appends its layer's recorded condition keys and values to the keys and
   values, so text and image tokens attend to the condition, exactly as in the masked joint computation.

This is the reference's computation, not an approximation (``tests/models/editors/test_flux_easycontrol.py``
checks it against a transcription of the joint masked forward), and the condition pass is the reference's
KV cache: it is computed once per generation, not once per denoising step. Without a cache in the kwargs the
processors compute plain FLUX attention.

The LoRA weights are stored as the reference stores them (``<layer>.processor.{q,k,v,proj}_loras.0.{down,up}.weight``
keys of the transformer's state dict), so a reference ``lora.safetensors`` loads with :func:`load_condition_lora`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

#: ``safetensors`` metadata keys written with a condition LoRA.
METADATA_KEYS = ('rank', 'alpha', 'cond_size')
_KEY = re.compile(r'^((?:single_)?transformer_blocks\.\d+\.attn\.processor)\.(q|k|v|proj)_loras\.0\.(down|up)\.weight$')


class ConditionLoRA(nn.Module):
    """``up(down(x)) * alpha / rank`` without biases; ``down`` ~ N(0, 1/rank), ``up`` zero (a fresh LoRA adds 0).

    The layer names (``down``, ``up``) and initialisation are the reference's, so its weights load unchanged.
    """

    def __init__(self, features: int, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        self.rank = int(rank)
        self.alpha = float(rank if alpha is None else alpha)
        self.down = nn.Linear(features, self.rank, bias=False)
        self.up = nn.Linear(self.rank, features, bias=False)
        nn.init.normal_(self.down.weight, std=1 / self.rank)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.up(self.down(x.to(self.down.weight.dtype))) * (self.alpha / self.rank)
        return out.to(x.dtype)


class ConditionCache:
    """The condition pass's keys and values per attention layer, (B, N_cond, heads, head_dim) each.

    A cache either records (the condition pass's, ``recording=True``: processors add their LoRA and store) or is
    read (the denoising pass's). The mode is fixed per object, not switched on one object: gradient checkpointing
    re-runs a block's forward during the backward pass, and the re-run must do what the first run did.
    """

    def __init__(self, recording: bool = False, kv: dict | None = None) -> None:
        self.recording = bool(recording)
        self.kv: dict[str, tuple[torch.Tensor, torch.Tensor]] = {} if kv is None else kv

    def recorder(self) -> 'ConditionCache':
        """A recording view that stores into this cache."""
        return ConditionCache(recording=True, kv=self.kv)

    def store(self, name: str, key: torch.Tensor, value: torch.Tensor) -> None:
        self.kv[name] = (key, value)

    def get(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in self.kv:
            raise KeyError(f'EasyControl: no condition keys recorded for {name}: run the condition pass '
                           '(run_condition_pass) with the same transformer first')
        return self.kv[name]


class EasyControlAttnProcessor(nn.Module):
    """FLUX attention with EasyControl's condition LoRA (one per attention layer; see the module docstring).

    Args:
        name: the layer's processor name (``transformer_blocks.0.attn.processor``), the cache key.
        features: the attention's width (``heads * head_dim``).
        rank, alpha: the condition LoRA's rank and alpha (scale ``alpha / rank``).
        dual: a double-stream block's attention (it also has an output projection, which gets a LoRA too).
        weight: multiplier of the LoRA's contribution (the reference's ``lora_weights``), 1 as trained.
    """

    def __init__(self, name: str, features: int, rank: int, alpha: float | None = None, dual: bool = True,
                 weight: float = 1.0) -> None:
        super().__init__()
        self.name, self.weight = str(name), float(weight)
        self.q_loras = nn.ModuleList([ConditionLoRA(features, rank, alpha)])
        self.k_loras = nn.ModuleList([ConditionLoRA(features, rank, alpha)])
        self.v_loras = nn.ModuleList([ConditionLoRA(features, rank, alpha)])
        if dual:
            self.proj_loras = nn.ModuleList([ConditionLoRA(features, rank, alpha)])

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb=None,
                 easycontrol: ConditionCache | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.embeddings import apply_rotary_emb
        if getattr(attn, 'fused_projections', False):
            raise ValueError('EasyControlAttnProcessor needs unfused q/k/v projections (unfuse_qkv_projections())')
        record = easycontrol is not None and easycontrol.recording
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        if record:  # every token of the condition pass is a condition token
            query = query + self.weight * self.q_loras[0](hidden_states)
            key = key + self.weight * self.k_loras[0](hidden_states)
            value = value + self.weight * self.v_loras[0](hidden_states)
        query, key, value = (x.unflatten(-1, (-1, attn.head_dim)) for x in (query, key, value))
        query, key = attn.norm_q(query), attn.norm_k(key)
        dual = encoder_hidden_states is not None and attn.added_kv_proj_dim is not None
        if dual:
            eq, ek, ev = (p(encoder_hidden_states).unflatten(-1, (-1, attn.head_dim))
                          for p in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj))
            query = torch.cat([attn.norm_added_q(eq), query], dim=1)
            key = torch.cat([attn.norm_added_k(ek), key], dim=1)
            value = torch.cat([ev, value], dim=1)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        if record:
            easycontrol.store(self.name, key, value)
        elif easycontrol is not None:  # text and image tokens also attend to the condition tokens
            cond_key, cond_value = easycontrol.get(self.name)
            key = torch.cat([key, cond_key.to(key.dtype)], dim=1)
            value = torch.cat([value, cond_value.to(value.dtype)], dim=1)
        out = dispatch_attention_fn(query, key, value, attn_mask=attention_mask)
        out = out.flatten(2, 3).to(query.dtype)
        if not dual:
            return out
        context, out = out.split_with_sizes([encoder_hidden_states.shape[1], out.shape[1] -
                                             encoder_hidden_states.shape[1]], dim=1)
        out = attn.to_out[0](out.contiguous())
        if record:  # the reference adds the output LoRA to the projected output (features -> features)
            out = out + self.weight * self.proj_loras[0](out)
        return attn.to_out[1](out), attn.to_add_out(context.contiguous())


def add_condition_lora(transformer, rank: int, alpha: float | None = None, weight: float = 1.0) -> nn.ModuleDict:
    """Sets an :class:`EasyControlAttnProcessor` (fresh LoRA, float32) on every attention layer of a FLUX
    transformer; returns them as a ``ModuleDict`` (``.`` in names as ``/``) holding the LoRA parameters."""
    processors, out = {}, nn.ModuleDict()
    for name in transformer.attn_processors:
        attn = transformer.get_submodule(name.rsplit('.', 1)[0])
        proc = EasyControlAttnProcessor(name, attn.inner_dim, rank, alpha, dual=attn.added_kv_proj_dim is not None,
                                        weight=weight).to(device=attn.to_q.weight.device, dtype=torch.float32)
        processors[name] = proc
        out[name.replace('.', '/')] = proc
    # The last layer's condition queries produce only condition outputs, which nothing reads: that LoRA gets no
    # gradient (in the reference too). Frozen, it does not stall DDP's gradient reduction.
    processors[name].q_loras.requires_grad_(False)
    transformer.set_attn_processor(processors)
    return out


def condition_processors(transformer) -> dict[str, EasyControlAttnProcessor]:
    procs = {n: p for n, p in transformer.attn_processors.items() if isinstance(p, EasyControlAttnProcessor)}
    if not procs:
        raise ValueError('the transformer has no EasyControl condition LoRA (add_condition_lora / '
                         'load_condition_lora first)')
    return procs


def condition_lora_state_dict(transformer) -> dict[str, torch.Tensor]:
    """The condition LoRA in the reference's keys (``transformer_blocks.0.attn.processor.q_loras.0.down.weight``)."""
    out = {}
    for name, proc in condition_processors(transformer).items():
        for key, value in proc.state_dict().items():
            out[f'{name}.{key}'] = value
    return out


def save_condition_lora(transformer, path: str | os.PathLike, cond_size: int) -> Path:
    """Writes the condition LoRA as one safetensors file (float32) with ``rank``/``alpha``/``cond_size`` metadata."""
    from safetensors.torch import save_file
    procs = condition_processors(transformer)
    lora = next(iter(procs.values())).q_loras[0]
    path = Path(os.fspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in condition_lora_state_dict(transformer).items()}
    save_file(state, os.fspath(path), metadata=dict(rank=str(lora.rank), alpha=str(lora.alpha),
                                                    cond_size=str(int(cond_size))))
    return path


def read_condition_lora(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata) of a condition LoRA file, or of the one ``.safetensors`` file in a folder."""
    from safetensors import safe_open
    p = Path(os.fspath(path)).expanduser()
    if p.is_dir():
        files = sorted(p.glob('*.safetensors'))
        if len(files) != 1:
            raise FileNotFoundError(f'EasyControl LoRA folder {p} holds {len(files)} .safetensors files; expected '
                                    'exactly one (lora.safetensors as EasyControl training writes it)')
        p = files[0]
    if not p.is_file():
        raise FileNotFoundError(f'EasyControl LoRA {p} does not exist; expected a .safetensors file of '
                                '<layer>.processor.{q,k,v,proj}_loras.0.{down,up}.weight tensors')
    with safe_open(os.fspath(p), 'pt') as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def load_condition_lora(transformer, path: str | os.PathLike, weight: float = 1.0,
                        alpha: float | None = None) -> dict[str, str]:
    """Loads a condition LoRA file (this project's or the reference's) into ``transformer``'s attention layers.

    The rank comes from the tensors, alpha from the file's metadata (the reference writes none and trains with
    alpha = rank), else ``alpha``, else the rank. Every attention layer must be covered and every tensor used.

    Returns:
        the file's metadata (``cond_size`` among it when this project wrote it).

    Raises:
        ValueError: naming the file and the first uncovered layers, unknown keys or shape mismatches.
    """
    state, meta = read_condition_lora(path)
    unknown = [k for k in state if not _KEY.match(k)]
    downs = [v for k, v in state.items() if k.endswith('.down.weight')]
    if unknown or not downs:
        raise ValueError(f'EasyControl LoRA {path}: {len(unknown)} keys are not condition-LoRA weights '
                         f'{unknown[:3]} (or none are): expected <layer>.processor.{{q,k,v,proj}}_loras.0.'
                         '{down,up}.weight')
    rank = int(downs[0].shape[0])
    alpha = float(meta['alpha']) if 'alpha' in meta else (rank if alpha is None else float(alpha))
    procs = {}
    for name in transformer.attn_processors:
        attn = transformer.get_submodule(name.rsplit('.', 1)[0])
        procs[name] = EasyControlAttnProcessor(name, attn.inner_dim, rank, alpha,
                                               dual=attn.added_kv_proj_dim is not None, weight=weight)
    expected = {f'{n}.{k}': v.shape for n, p in procs.items() for k, v in p.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = [f'{k} {tuple(state[k].shape)} (model {tuple(s)})' for k, s in expected.items()
              if k in state and tuple(state[k].shape) != tuple(s)]
    if missing or extra or shapes:
        raise ValueError(f'EasyControl LoRA {path} does not fit this transformer ({len(procs)} attention layers, '
                         f'width {next(iter(procs.values())).q_loras[0].down.in_features}): {len(missing)} missing '
                         f'{missing[:3]}, {len(extra)} unexpected {extra[:3]}, {len(shapes)} of another shape '
                         f'{shapes[:3]}')
    for name, proc in procs.items():
        proc.load_state_dict({k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + '.')})
        proc.to(device=transformer.device, dtype=transformer.dtype)
    transformer.set_attn_processor(procs)
    return meta


def run_condition_pass(transformer, cond_tokens: torch.Tensor, cond_ids: torch.Tensor,
                       pooled_projections: torch.Tensor, guidance: torch.Tensor | None) -> ConditionCache:
    """The condition pass: ``transformer`` on the packed condition tokens (B, N, F) alone at timestep 0, with
    position ids ``cond_ids`` (N, 3); returns the cache of every layer's condition keys and values.

    The pooled prompt embedding and the guidance are those of the denoising pass (the reference's condition
    timestep embedding is ``time_text_embed(0, guidance, pooled)``). Gradients flow through the cache when the
    caller has them enabled (training).
    """
    condition_processors(transformer)
    cache = ConditionCache()
    b = cond_tokens.shape[0]
    dtype = transformer.dtype
    no_text = torch.zeros(b, 0, transformer.config.joint_attention_dim, device=cond_tokens.device, dtype=dtype)
    transformer(hidden_states=cond_tokens.to(dtype), encoder_hidden_states=no_text,
                pooled_projections=pooled_projections.to(dtype), timestep=torch.zeros(b, device=cond_tokens.device,
                                                                                      dtype=dtype),
                guidance=guidance, txt_ids=cond_ids.new_zeros(0, 3), img_ids=cond_ids,
                joint_attention_kwargs=dict(easycontrol=cache.recorder()), return_dict=False)
    return cache


__all__ = ['ConditionLoRA', 'ConditionCache', 'EasyControlAttnProcessor', 'add_condition_lora',
           'condition_lora_state_dict', 'save_condition_lora', 'read_condition_lora', 'load_condition_lora',
           'run_condition_pass', 'condition_processors']
