"""Pipeline of DPO pairs: read the winner, the loser and their shared controls, resize them together, pack them.

The packed sample (docs/dpo_pairs.md, "Training sample"; the control-training sample with two images)::

    dict(inputs=dict(image_w=torch.uint8 (3, H, W) RGB, image_l=torch.uint8 (3, H, W) RGB,
                     control=torch.uint8 (3k, H, W) RGB),
         data_samples=dict(prompt=str, sample_id=str))

Reading, resizing and packing of the winner and the controls are the control-pair transforms'
(:mod:`posedreamer_mm.datasets.transforms.control_pair_transforms`); these add the loser.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from posedreamer_mm.registry import TRANSFORMS

from .control_pair_transforms import LoadControlPair, PackControlPair, ResizeControlPair, _read_rgb

_JPEG_START, _JPEG_END = b'\xff\xd8', b'\xff\xd9'


def check_complete(path: str, what: str, sample_id: str) -> None:
    """Refuses a truncated JPEG (starts with the start-of-image marker, does not end with the end-of-image one).

    OpenCV decodes such a file without an error (the missing rows grey, a libjpeg warning on stderr), so a JPEG
    cut by an interrupted write or copy would be trained on; a truncated PNG already fails to decode. A missing
    file is left to the read that follows.

    Raises:
        FileNotFoundError: naming the file and the sample (the read errors' type).
    """
    try:
        with open(path, 'rb') as f:
            if f.read(2) != _JPEG_START:
                return
            size = f.seek(0, 2)
            f.seek(max(0, size - 64))
            tail = f.read()
    except OSError:
        return
    if not tail.rstrip(b'\x00').endswith(_JPEG_END):
        raise FileNotFoundError(f'{what} {path} of sample {sample_id!r} is truncated (a JPEG without its end-of-image '
                                'marker: an interrupted write or copy; tools/verify_dataset.py checks every file '
                                'against its sha256)')


@TRANSFORMS.register_module()
class LoadDPOPair(LoadControlPair):
    """Reads the winner (``img_path``), the loser (``img_l_path``) and the controls (RGB uint8).

    Required Keys:
        - img_path: the winner's image
        - img_l_path: the loser's image
        - control_paths
        - sample_id

    Added Keys:
        - img: the winner, ``(H, W, 3)`` uint8 RGB
        - img_l: the loser, ``(H, W, 3)`` uint8 RGB
        - controls: list of ``(H, W, 3)`` uint8 RGB

    Raises:
        FileNotFoundError: naming the file and the pair, for a missing, unreadable or truncated image
            (:func:`check_complete`).
        ValueError: a loser or control whose size differs from the winner's (a group shares one crop camera).
    """

    def transform(self, results: dict) -> dict:
        check_complete(results['img_path'], 'winner image', results['sample_id'])
        check_complete(results['img_l_path'], 'loser image', results['sample_id'])
        results = super().transform(results)
        img_l = _read_rgb(results['img_l_path'], 'loser image', results['sample_id'])
        if img_l.shape != results['img'].shape:
            raise ValueError(f'loser image {results["img_l_path"]} of pair {results["sample_id"]!r} is '
                             f'{img_l.shape[:2]} but its winner is {results["img"].shape[:2]}: candidates of one '
                             'control share its crop camera')
        results['img_l'] = img_l
        return results


@TRANSFORMS.register_module()
class ResizeDPOPair(ResizeControlPair):
    """:class:`ResizeControlPair` for both images of a pair (the loser resampled as the winner).

    Required Keys:
        - img
        - img_l
        - controls

    Modified Keys:
        - img
        - img_l
        - controls
    """

    def transform(self, results: dict) -> dict:
        img_l = results['img_l']
        interp = cv2.INTER_AREA if img_l.shape[0] > self.size else cv2.INTER_LINEAR
        results = super().transform(results)
        results['img_l'] = cv2.resize(img_l, (self.size, self.size), interpolation=interp)
        return results


@TRANSFORMS.register_module()
class PackDPOPair(PackControlPair):
    """Packs a pair into the DPO trainers' sample (module docstring).

    Required Keys:
        - img: the winner, ``(H, W, 3)`` uint8 RGB
        - img_l: the loser, same shape
        - controls: list of ``(H, W, 3)`` uint8 RGB
        - prompt
        - sample_id

    Added Keys:
        - inputs: ``image_w``, ``image_l`` ``(3, H, W)`` uint8, ``control`` ``(3k, H, W)`` uint8
        - data_samples: ``prompt``, ``sample_id`` (and ``extra_keys``)
    """

    def transform(self, results: dict) -> dict:
        packed = super().transform(results)   # checks the winner and the controls
        img_l = np.asarray(results['img_l'])
        if img_l.shape != np.asarray(results['img']).shape or img_l.dtype != np.uint8:
            raise ValueError(f'PackDPOPair: loser of {results["sample_id"]!r} is {img_l.shape} {img_l.dtype}, '
                             f'expected {np.asarray(results["img"]).shape} uint8 like its winner')
        inputs = packed['inputs']
        packed['inputs'] = dict(image_w=inputs['image'],
                                image_l=torch.from_numpy(np.ascontiguousarray(img_l.transpose(2, 0, 1))),
                                control=inputs['control'])
        return packed


__all__ = ['LoadDPOPair', 'ResizeDPOPair', 'PackDPOPair', 'check_complete']
