"""The interface every generation backend implements (diffusion pipelines and the rendering baseline).

A backend turns the per-sample results dicts of the generator (``docs/conventions.md``) into images::

    backend = BACKENDS.build(dict(type='SD15ControlNetBackend', weights=..., batch_size=8))
    backend.setup()                       # once, in the process that generates: loads weights, moves to device
    images = backend.generate(batch)      # list of (H, W, 3) uint8 RGB, one per results dict, control crop size
    meta = backend.record()               # written once per run to the manifest (steps, guidance, weights ...)

Each results dict carries ``controls`` (``{control_type: (H, W, 3) uint8 RGB}`` at the crop camera),
``prompt``, ``negative_prompt``, ``seed``, ``sample`` (the :class:`~posedreamer_mm.body.sample.BodySample`
with the crop camera), ``vertices``, ``joints`` (camera frame, metres) and ``faces``. A backend reads only the
keys it needs and never changes the dicts.

**Seeds.** Every image depends only on its own dict (its ``seed`` above all), never on the batch or rank it
landed in: a sample generated in a batch of 4 equals the same sample generated alone. Diffusion backends pass
one ``torch.Generator`` per sample (:func:`sample_generators`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: The keys every results dict must carry for any backend (``check_batch``).
REQUIRED_KEYS = ('seed', 'sample')


class BaseGenerationBackend:
    """Base of the registered generation backends.

    Subclasses set :attr:`name` and :attr:`control_types`, and implement :meth:`generate` (and :meth:`setup`
    when they hold weights).

    Args:
        batch_size: samples per :meth:`generate` call (the generator groups its samples by it).
    """

    #: Stored as each record's ``backend``.
    name: str = ''
    #: Control images consumed from ``results['controls']``, e.g. ``['pncc']`` or ``['openpose', 'depth']``.
    control_types: list[str] = []

    def __init__(self, batch_size: int = 1) -> None:
        if int(batch_size) < 1:
            raise ValueError(f'{type(self).__name__}: batch_size must be >= 1, got {batch_size}')
        self.batch_size = int(batch_size)

    def setup(self) -> None:
        """Loads weights and moves them to the device; called once in the generating process (idempotent)."""

    def generate(self, batch: list[dict]) -> list[np.ndarray]:
        """One image per results dict.

        Args:
            batch: at most :attr:`batch_size` results dicts (keys in the module docstring).

        Returns:
            One ``(H, W, 3)`` uint8 RGB image per dict, ``(H, W)`` the size of its control crop.
        """
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        """What produced the images: at least ``backend`` and ``control_types``.

        The generator writes it once per run, to ``manifest.json``'s ``backend_record`` (every sample's
        ``meta.jsonl`` row holds only the backend's :attr:`name`); the backend's config, with everything that
        changes an image, is part of the manifest's config fingerprint.
        """
        return dict(backend=self.name, control_types=list(self.control_types))

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name={self.name!r}, batch_size={self.batch_size}, ' \
               f'control_types={self.control_types})'

    # --- helpers shared by the subclasses --------------------------------------------------------------------
    def check_batch(self, batch: Sequence[dict]) -> tuple[int, int]:
        """Validates a batch and returns its common output ``(H, W)``.

        The size is that of the dicts' control images when the backend consumes any, else the crop camera's
        ``sample.img_size`` (W, H). All samples of a batch must share it (one tensor per call).

        Raises:
            ValueError: naming the sample and the missing key, control or mismatching size.
        """
        if not batch:
            raise ValueError(f'{type(self).__name__}.generate() got an empty batch')
        if len(batch) > self.batch_size:
            raise ValueError(f'{type(self).__name__}.generate() got {len(batch)} samples, more than its '
                             f'batch_size={self.batch_size}')
        sizes = set()
        for results in batch:
            sid = results.get('id', getattr(results.get('sample'), 'id', '?'))
            missing = [k for k in REQUIRED_KEYS if k not in results]
            if missing:
                raise ValueError(f'{type(self).__name__}: sample {sid!r} lacks results keys {missing}')
            for ctype in self.control_types:
                img = results.get('controls', {}).get(ctype)
                if img is None:
                    have = sorted(results.get('controls', {}))
                    raise ValueError(f'{type(self).__name__} needs control {ctype!r} but sample {sid!r} has '
                                     f'{have}: add a renderer with control_type={ctype!r} to the controls')
                img = np.asarray(img)
                if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                    raise ValueError(f'control {ctype!r} of sample {sid!r} must be (H, W, 3) uint8 RGB, got '
                                     f'{img.shape} {img.dtype}')
                sizes.add(img.shape[:2])
            if not self.control_types:
                w, h = (int(s) for s in np.asarray(results['sample'].img_size).reshape(2))
                sizes.add((h, w))
        if len(sizes) != 1:
            raise ValueError(f'{type(self).__name__}: one batch must share one image size, got {sorted(sizes)}')
        return sizes.pop()


def sample_generators(seeds: Sequence[int]) -> list:
    """One CPU ``torch.Generator`` per sample, seeded with its own seed (a list diffusers pipelines accept).

    Seeds are reduced modulo 2**63 (sample seeds are 64-bit, ``stable_seed``). CPU generators on purpose:
    diffusers' ``randn_tensor`` then draws the initial noise on the CPU and moves it to the device, so a seed
    gives the same noise on every device and GPU model (the denoiser's arithmetic may still differ slightly).
    """
    import torch
    return [torch.Generator(device='cpu').manual_seed(int(s) % (2 ** 63)) for s in seeds]
