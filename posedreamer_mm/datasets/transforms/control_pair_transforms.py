"""Pipeline of control-training pairs: read the image and its controls, resize them together, pack them.

The packed sample is the one every diffusion trainer reads (docs/control_pairs.md, "Format")::

    dict(inputs=dict(image=torch.uint8 (3, H, W) RGB, control=torch.uint8 (3k, H, W) RGB),
         data_samples=dict(prompt=str, sample_id=str))

mmengine's ``pseudo_collate`` turns a batch into ``inputs=dict(image=[...], control=[...])`` and
``data_samples=dict(prompt=[...], sample_id=[...])``; the diffusion data preprocessor scales and stacks them.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from mmcv.transforms import BaseTransform

from posedreamer_mm.registry import TRANSFORMS


def _read_rgb(path: str, what: str, sample_id: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f'{what} {path} of sample {sample_id!r} is missing or unreadable (a damaged '
                                'dataset: tools/verify_dataset.py checks every file)')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@TRANSFORMS.register_module()
class LoadControlPair(BaseTransform):
    """Reads a pair's image and its control images (RGB uint8).

    Required Keys:
        - img_path
        - control_paths: one path per control, in the dataset's ``control_types`` order
        - sample_id

    Added Keys:
        - img: ``(H, W, 3)`` uint8 RGB
        - controls: list of ``(H, W, 3)`` uint8 RGB, in ``control_paths`` order

    Raises:
        FileNotFoundError: naming the file and the sample, for a missing or unreadable image.
        ValueError: a control whose size differs from the image's (they share one crop camera).
    """

    def transform(self, results: dict) -> dict:
        sid = results['sample_id']
        img = _read_rgb(results['img_path'], 'image', sid)
        controls = [_read_rgb(p, 'control image', sid) for p in results['control_paths']]
        for path, control in zip(results['control_paths'], controls):
            if control.shape != img.shape:
                raise ValueError(f'control {path} of sample {sid!r} is {control.shape[:2]} but its image is '
                                 f'{img.shape[:2]}: a pair shares one crop camera')
        results.update(img=img, controls=controls)
        return results


@TRANSFORMS.register_module()
class ResizeControlPair(BaseTransform):
    """Resizes the image and every control to one square side (training at another size than generated).

    The image is resampled with area averaging (shrinking) or bilinear (enlarging); controls with nearest
    neighbour by default, so a PNCC colour or a skeleton colour stays a colour the renderer draws.

    Required Keys:
        - img
        - controls

    Modified Keys:
        - img
        - controls

    Args:
        size: Output side in pixels.
        control_interpolation: ``'nearest'`` or ``'linear'`` (smooth controls such as depth).
    """

    _INTERP = dict(nearest=cv2.INTER_NEAREST, linear=cv2.INTER_LINEAR)

    def __init__(self, size: int, control_interpolation: str = 'nearest') -> None:
        if int(size) < 1:
            raise ValueError(f'ResizeControlPair: size must be >= 1, got {size}')
        if control_interpolation not in self._INTERP:
            raise ValueError(f'ResizeControlPair: control_interpolation must be one of {sorted(self._INTERP)}, '
                             f'got {control_interpolation!r}')
        self.size, self.control_interpolation = int(size), control_interpolation

    def transform(self, results: dict) -> dict:
        s = self.size
        img = results['img']
        interp = cv2.INTER_AREA if img.shape[0] > s else cv2.INTER_LINEAR
        results['img'] = cv2.resize(img, (s, s), interpolation=interp)
        flag = self._INTERP[self.control_interpolation]
        results['controls'] = [cv2.resize(c, (s, s), interpolation=flag) for c in results['controls']]
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size}, control_interpolation={self.control_interpolation!r})'


@TRANSFORMS.register_module()
class PackControlPair(BaseTransform):
    """Packs a pair into the trainers' sample (module docstring).

    Required Keys:
        - img: ``(H, W, 3)`` uint8 RGB
        - controls: list of ``(H, W, 3)`` uint8 RGB
        - prompt
        - sample_id

    Added Keys:
        - inputs: ``image`` ``(3, H, W)`` uint8, ``control`` ``(3k, H, W)`` uint8 (controls channel-concatenated in
          order)
        - data_samples: ``prompt``, ``sample_id``

    Args:
        extra_keys: Further results keys copied into ``data_samples`` (e.g. ``'row'``).
    """

    def __init__(self, extra_keys: Sequence[str] = ()) -> None:
        self.extra_keys = tuple(extra_keys)

    def transform(self, results: dict) -> dict:
        img, controls = np.asarray(results['img']), [np.asarray(c) for c in results['controls']]
        sid = results['sample_id']
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f'PackControlPair: image of {sid!r} must be (H, W, 3) uint8, got {img.shape} {img.dtype}')
        if not controls:
            raise ValueError(f'PackControlPair: sample {sid!r} has no control image')
        for c in controls:
            if c.shape != img.shape or c.dtype != np.uint8:
                raise ValueError(f'PackControlPair: a control of {sid!r} is {c.shape} {c.dtype}, expected '
                                 f'{img.shape} uint8 like its image')
        image = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        control = torch.from_numpy(np.ascontiguousarray(np.concatenate(controls, axis=2).transpose(2, 0, 1)))
        data_samples = dict(prompt=str(results.get('prompt') or ''), sample_id=str(sid))
        data_samples.update({k: results[k] for k in self.extra_keys})
        return dict(inputs=dict(image=image, control=control), data_samples=data_samples)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(extra_keys={self.extra_keys})'


__all__ = ['LoadControlPair', 'ResizeControlPair', 'PackControlPair']
