"""FLUX with an EasyControl condition LoRA (the reference's PNCC control model): ``EasyControlFluxBackend``.

The base is a plain FLUX.1-dev folder; the condition LoRA (one ``.safetensors`` file, as EasyControl training and
:class:`~posedreamer_mm.models.editors.easycontrol.EasyControlTrainer` write it) is set into every attention layer
as an attention processor (:mod:`posedreamer_mm.models.editors.easycontrol.processor`), and each batch runs
:class:`~posedreamer_mm.models.editors.easycontrol.FluxEasyControlPipeline`: the control resized to the condition
size, the condition pass once, then ``FluxPipeline`` attending to the recorded condition keys and values.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from posedreamer_mm.registry import BACKENDS

from .diffusers_base import DiffusersBackend
from .weights import WeightsLayoutError, check_lora_paths, check_pipeline_folder, describe

_FLUX_PARTS = ('transformer', 'vae', 'text_encoder', 'tokenizer', 'text_encoder_2', 'tokenizer_2', 'scheduler')


@BACKENDS.register_module()
class EasyControlFluxBackend(DiffusersBackend):
    """FLUX.1-dev + an EasyControl condition LoRA (``configs/generation/backends/flux_easycontrol_pncc.py``).

    Args:
        condition: ``dict(path, weight=1.0)``: the condition-LoRA file (or a folder holding exactly one
            ``.safetensors``) and the multiplier of its contribution. ``None`` only when a live pipeline is set
            (the validation hook).
        control_type: the control image the LoRA was trained on (``'pncc'``).
        cond_size: the condition's side in pixels; default: the file's ``cond_size`` metadata (this project's
            trainer writes it), else 512 (the reference's).
        guidance_scale: FLUX's distilled guidance (3.5 for FLUX.1-dev).
        **kwargs: :class:`~.diffusers_base.DiffusersBackend` (weights, further ``loras`` stacked on the base,
            steps, scheduler, dtype (default bfloat16), device, ``channels_last``/``compile`` (applied to the
            transformer after the condition processors are set), call_kwargs).
    """
    name = 'flux_easycontrol'
    pipeline_class = 'FluxEasyControlPipeline'
    load_class = 'FluxPipeline'
    accepted_pipelines = ('FluxPipeline',)
    required_subfolders = _FLUX_PARTS
    image_arg = 'control_image'
    denoiser = 'transformer'
    latent_patch = 2
    uses_negative_prompt = False

    def __init__(self, control_type: str, condition: dict | None = None, cond_size: int | None = None,
                 guidance_scale: float = 3.5, num_inference_steps: int = 28, dtype: str = 'bfloat16',
                 **kwargs) -> None:
        super().__init__(guidance_scale=guidance_scale, num_inference_steps=num_inference_steps, dtype=dtype,
                         **kwargs)
        self.control_types = [str(control_type)]
        if condition is not None:
            condition = dict(condition)
            unknown = set(condition) - {'path', 'weight'}
            if 'path' not in condition or unknown:
                raise ValueError(f'EasyControlFluxBackend: condition={condition} needs path and takes only weight '
                                 f'(unknown: {sorted(unknown)})')
            condition = dict(path=Path(os.fspath(condition['path'])).expanduser(),
                             weight=float(condition.get('weight', 1.0)))
        self.condition = condition
        self.cond_size = None if cond_size is None else int(cond_size)
        self.loaded_cond_size: int | None = None  # cond_size, else the file's metadata, else 512 (set by attach)

    def check_weights(self) -> None:
        check_pipeline_folder(self.weights, self.accepted_pipelines, self.required_subfolders, self.what())
        check_lora_paths(self.loras)
        if self.condition is None:
            raise WeightsLayoutError('EasyControlFluxBackend: no condition LoRA: set condition=dict(path=...) to the '
                                     'lora.safetensors EasyControl training wrote')
        if not self.condition['path'].exists():
            raise WeightsLayoutError(f'EasyControlFluxBackend: condition LoRA {self.condition["path"]} does not '
                                     'exist; expected a .safetensors file (or a folder holding one)')

    def attach(self, pipe) -> None:
        """Sets the condition LoRA's processors into every attention layer of ``pipe.transformer``."""
        from posedreamer_mm.models.editors.easycontrol import load_condition_lora
        try:
            meta = load_condition_lora(pipe.transformer, self.condition['path'], weight=self.condition['weight'])
        except (OSError, ValueError) as err:
            raise WeightsLayoutError(f'EasyControlFluxBackend: {err}') from err
        self.loaded_cond_size = self.cond_size or int(meta.get('cond_size', 512))

    def wrap(self, pipe):
        from posedreamer_mm.models.editors.easycontrol import FluxEasyControlPipeline
        return FluxEasyControlPipeline(pipe, self.loaded_cond_size)

    def control_inputs(self, batch: list[dict]) -> dict[str, Any]:
        return dict(control_image=self.control_tensor(batch, self.control_types[0]))

    def record(self) -> dict[str, Any]:
        return {**super().record(), 'condition': describe(self.condition), 'cond_size': self.cond_size}


__all__ = ['EasyControlFluxBackend']
