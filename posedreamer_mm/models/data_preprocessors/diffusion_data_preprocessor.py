"""Data preprocessor of the diffusion trainers: stacks images and controls and scales them as diffusers expects."""
from __future__ import annotations

from typing import Any

import torch
from mmengine.model import BaseDataPreprocessor

from posedreamer_mm.registry import MODELS


@MODELS.register_module()
class DiffusionDataPreprocessor(BaseDataPreprocessor):
    """Stacks every tensor list under ``inputs`` and scales it by its key (docs/control_training.md):

    - keys starting with ``image`` (``image``, DPO's ``image_w``/``image_l``): uint8 ``(3, H, W)`` RGB ->
      float32 ``(B, 3, H, W)`` in ``[-1, 1]`` (``x / 127.5 - 1``, what the VAE encoder takes);
    - keys starting with ``control``: uint8 ``(C, H, W)`` -> float32 ``(B, C, H, W)`` in ``[0, 1]`` (``x / 255``,
      what diffusers' ControlNet pipelines feed the ControlNet after their image processor).

    Everything is moved to the model's device; ``data_samples`` pass through unchanged. Inputs must be uint8 (a
    float input is refused rather than guessed: it may already be scaled), every sample of one key of the same
    shape (the dataset crops to one size), and at least one sample in the batch.
    """

    def forward(self, data: dict, training: bool = False) -> dict[str, Any]:
        data = self.cast_data(data)  # moves tensors (also nested in dicts and lists) to self.device
        inputs = data.get('inputs')
        if not isinstance(inputs, dict) or not inputs:
            raise ValueError(f'DiffusionDataPreprocessor expects inputs=dict(image=[...], control=[...]), got '
                             f'{type(inputs).__name__}')
        out = {}
        for key, values in inputs.items():
            if key.startswith('image'):
                out[key] = self._stack(key, values).float() / 127.5 - 1.0
            elif key.startswith('control'):
                out[key] = self._stack(key, values).float() / 255.0
            else:
                raise ValueError(f"DiffusionDataPreprocessor: input key {key!r} starts with neither 'image' nor "
                                 "'control' (it would not know how to scale it)")
        return dict(inputs=out, data_samples=data.get('data_samples'))

    @staticmethod
    def _stack(key: str, values) -> torch.Tensor:
        if isinstance(values, torch.Tensor):
            values = list(values) if values.ndim == 4 else [values]
        if not values:
            raise ValueError(f'DiffusionDataPreprocessor: inputs[{key!r}] is an empty batch')
        bad = [str(v.dtype) for v in values if not isinstance(v, torch.Tensor) or v.dtype != torch.uint8]
        if bad:
            raise TypeError(f'DiffusionDataPreprocessor: inputs[{key!r}] must be uint8 tensors (0-255), got {bad[:3]}')
        shapes = sorted({tuple(v.shape) for v in values})
        if len(shapes) > 1 or len(shapes[0]) != 3:
            raise ValueError(f'DiffusionDataPreprocessor: inputs[{key!r}] must be (C, H, W) tensors of one shape '
                             f'per batch, got {shapes}')
        return torch.stack(values)


__all__ = ['DiffusionDataPreprocessor']
