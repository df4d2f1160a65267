"""Data preprocessor of the HMR model: stacks and normalises the packed RGB crops."""
from __future__ import annotations

from mmengine.model import ImgDataPreprocessor

from posedreamer_mm.registry import MODELS


@MODELS.register_module()
class HMRDataPreprocessor(ImgDataPreprocessor):
    """Stacks ``inputs`` (each ``(3, H, W)`` uint8 **RGB**, docs/conventions.md "HMR data"), moves the batch to
    the model's device and normalises it with ImageNet statistics (what ViTPose and MAE weights were trained on).

    Unlike mmpose's ``PoseDataPreprocessor`` (whose configs convert BGR to RGB), the HMR packing transform
    already emits RGB, so there is no channel swap by default. Crops of different sizes in one batch are an
    error rather than padded, since the camera metainfo describes each crop at its own size.

    Args:
        mean: Per-channel RGB mean (0-255).
        std: Per-channel RGB std (0-255).
        **kwargs: Further :class:`mmengine.model.ImgDataPreprocessor` arguments.
    """

    def __init__(self, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), **kwargs):
        super().__init__(mean=mean, std=std, **kwargs)

    def forward(self, data: dict, training: bool = False) -> dict:
        inputs = data['inputs']
        if isinstance(inputs, (list, tuple)):
            shapes = {tuple(x.shape) for x in inputs}
            if len(shapes) > 1:
                raise ValueError(f'HMRDataPreprocessor: crops of different sizes in one batch {sorted(shapes)}; the '
                                 f'pipeline must crop every sample to the same input_size')
            if any(len(s) != 3 or s[0] != 3 for s in shapes):
                raise ValueError(f'HMRDataPreprocessor expects (3, H, W) RGB crops, got {sorted(shapes)}')
        return super().forward(data, training)


__all__ = ['HMRDataPreprocessor']
