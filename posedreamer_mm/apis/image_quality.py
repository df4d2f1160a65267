"""What ``tools/image_quality.py`` calls: FID-64, FID-2048, KID (and the Inception Score) of a generated dataset or
an image folder against a reference image folder (protocol: docs/image_quality.md).

::

    python tools/image_quality.py GEN --ref REF_FOLDER [--fid-dims 64 2048] [--kid] [--is-weights PATH]
        [--max-images N] [--kept manifest_filtered.jsonl] --out metrics.json

``GEN`` is a generated dataset (a folder with ``manifest.json``: its committed samples in shard/row order, or only
the rows a filter kept with ``--kept``) or a folder of images (searched recursively, sorted by path). Both sets go
through the same network (:class:`~posedreamer_mm.evaluation.inception.InceptionFeatureNetwork`, hash-checked)
and the maths of :mod:`posedreamer_mm.evaluation.functional.image_quality`; :class:`ImageQualityMetric` (the
registered metric) computes the same numbers inside an mmengine evaluator.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from posedreamer_mm.evaluation.functional.image_quality import (
    fid_from_features,
    inception_score,
    kernel_inception_distance,
)
from posedreamer_mm.evaluation.inception import (
    FEATURE_DIMS,
    FID_INCEPTION_SHA256,
    INPUT_SIZE,
    InceptionFeatureNetwork,
    load_logits_network,
    preprocess,
)
from posedreamer_mm.utils.fileio import atomic_write_text

#: Image files an image folder may hold.
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')
#: The reference computed the Inception Score on at most this many images.
IS_MAX_IMAGES = 1000


class ImageSetError(ValueError):
    """An image set (folder, generated dataset, kept-samples list) that is missing, empty or unreadable."""


class ImageSet:
    """The images of a generated dataset or of a folder, in a fixed order.

    Args:
        path: a generated dataset (``manifest.json`` inside) or a folder of images (recursive, sorted paths).
        max_images: use only the first ``max_images``.
        kept: for a generated dataset, a ``manifest_filtered.jsonl`` (``tools/filter.py``): only its rows.

    Raises:
        ImageSetError: naming the path: missing, no images, or ``kept`` given for a folder / unreadable.
    """

    def __init__(self, path: str, max_images: int | None = None, kept: str | None = None) -> None:
        self.path = osp.abspath(path)
        if not osp.isdir(self.path):
            raise ImageSetError(f'{path}: no such directory (expected a generated dataset or an image folder)')
        self._reader = None
        if osp.isfile(osp.join(self.path, 'manifest.json')):
            from posedreamer_mm.generation.reader import GeneratedDataReader
            self._reader = GeneratedDataReader(self.path)
            self.kind = 'generated dataset'
            self.items: list = list(range(len(self._reader)))
            if kept:
                self.items = self._kept_rows(kept)
        else:
            if kept:
                raise ImageSetError(f'--kept {kept}: only a generated dataset has filter rows; {path} is an image '
                                    'folder')
            self.kind = 'image folder'
            self.items = sorted(osp.join(root, name) for root, _, names in os.walk(self.path) for name in names
                                if name.lower().endswith(IMAGE_EXTENSIONS))
        if max_images is not None:
            self.items = self.items[:int(max_images)]
        if not self.items:
            raise ImageSetError(f'{path}: no images (a {self.kind}; image files: {", ".join(IMAGE_EXTENSIONS)})')

    def _kept_rows(self, kept: str) -> list[int]:
        try:
            with open(kept) as f:
                rows = [json.loads(line) for line in f if line.strip()]
            return [self._reader.index_of(r['id']) for r in rows]
        except (OSError, ValueError, KeyError) as err:
            raise ImageSetError(f'--kept {kept}: not a manifest_filtered.jsonl of {self.path} ({err})') from err

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> np.ndarray:
        """Image ``i`` as ``(H, W, 3)`` uint8 RGB."""
        item = self.items[i]
        if self._reader is not None:
            return self._reader.load_image(item)
        img = cv2.imread(item, cv2.IMREAD_COLOR)
        if img is None:
            raise ImageSetError(f'{item}: cannot read the image (missing or corrupt)')
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def extract_features(images: ImageSet, network: InceptionFeatureNetwork, logits_network=None,
                     batch_size: int = 16, progress: bool = True, desc: str = 'features') -> dict:
    """Features of every image of ``images``: ``{64: (N, 64), 2048: (N, 2048)}`` float64 arrays, plus
    ``'logits': (N, C)`` when ``logits_network`` is given (it sees the same preprocessed input)."""
    parts: dict = {d: [] for d in network.dims}
    if logits_network is not None:
        parts['logits'] = []
    bar = tqdm(total=len(images), desc=desc, unit='img', disable=not progress)
    for start in range(0, len(images), batch_size):
        batch = [images.load(i) for i in range(start, min(len(images), start + batch_size))]
        x = preprocess(batch, network.resize, network.device)
        feats = network.features(x)
        for d in network.dims:
            parts[d].append(feats[d].cpu())
        if logits_network is not None:
            with torch.no_grad():
                parts['logits'].append(logits_network(x).double().cpu())
        bar.update(len(batch))
    bar.close()
    return {k: torch.cat(v).numpy() for k, v in parts.items()}


def compute_image_quality(gen: dict, ref: dict, fid_dims: Sequence[int] = FEATURE_DIMS, kid: bool = True,
                          kid_subsets: int = 100, kid_subset_size: int = 1000, is_splits: int = 10,
                          is_max_images: int | None = IS_MAX_IMAGES, seed: int = 0) -> dict[str, float]:
    """The metrics from feature dicts (:func:`extract_features`): ``fid<d>`` for each ``d`` in ``fid_dims``,
    ``kid<d>_mean``/``kid<d>_std`` when ``kid``, ``is_mean``/``is_std`` when ``gen`` has ``'logits'`` (on the
    first ``is_max_images`` images), and the counts ``num_gen``/``num_ref`` (plus the KID subset size and IS
    splits used)."""
    out: dict[str, float] = {}
    for d in fid_dims:
        if d not in gen or d not in ref:
            raise ValueError(f'feature size {d} is not one of {sorted(k for k in gen if isinstance(k, int))}')
        out[f'fid{d}'] = fid_from_features(ref[d], gen[d])
        if kid:
            size = min(kid_subset_size, len(gen[d]), len(ref[d]))
            out[f'kid{d}_mean'], out[f'kid{d}_std'] = kernel_inception_distance(
                ref[d], gen[d], subsets=kid_subsets, subset_size=size, seed=seed)
            out['kid_subset_size'] = float(size)
    if gen.get('logits') is not None:
        logits = gen['logits'][:is_max_images]
        splits = min(is_splits, len(logits))
        out['is_mean'], out['is_std'] = inception_score(logits, splits=splits, seed=seed)
        out['is_splits'], out['is_images'] = float(splits), float(len(logits))
    out['num_gen'] = float(len(gen[fid_dims[0]] if fid_dims else gen[FEATURE_DIMS[0]]))
    out['num_ref'] = float(len(ref[fid_dims[0]] if fid_dims else ref[FEATURE_DIMS[0]]))
    return out


def format_table(metrics: dict[str, float]) -> str:
    """The metrics as a two-column text table (FIDs first)."""
    order = sorted(metrics, key=lambda k: (not k.startswith('fid'), not k.startswith('kid'), k))
    width = max(len(k) for k in order)
    lines = [f'{"metric".ljust(width)}  value', f'{"-" * width}  {"-" * 12}']
    for k in order:
        v = metrics[k]
        lines.append(f'{k.ljust(width)}  {v:.6g}' if not k.startswith(('num_', 'is_splits', 'is_images', 'kid_sub'))
                     else f'{k.ljust(width)}  {int(v)}')
    return '\n'.join(lines)


def run_image_quality(gen: str, ref: str, fid_dims: Sequence[int] = FEATURE_DIMS, kid: bool = True,
                      is_weights: str | None = None, is_sha256: str | None = None, max_images: int | None = None,
                      kept: str | None = None, batch_size: int = 16, resize: str = 'antialias',
                      device: str = 'cpu', inception_path: str | None = None, kid_subsets: int = 100,
                      kid_subset_size: int = 1000, is_splits: int = 10, seed: int = 0, out: str | None = None,
                      progress: bool = True, log: Callable[[str], None] | None = print) -> dict:
    """Features of both sets, the metrics, and (``out``) a JSON file ``{"metrics": {...}, "protocol": {...}}``.

    Raises:
        ImageSetError: a set is missing, empty or unreadable.
        posedreamer_mm.evaluation.inception.InceptionWeightsError: the network file (or ``is_weights``) is missing,
            altered or not a network of the expected kind.
    """
    bad = [d for d in fid_dims if d not in FEATURE_DIMS]
    if bad or not fid_dims:
        raise ImageSetError(f'--fid-dims {list(fid_dims)}: each must be one of {list(FEATURE_DIMS)}')
    gen_set, ref_set = ImageSet(gen, max_images, kept), ImageSet(ref, max_images)
    network = InceptionFeatureNetwork(inception_path, resize=resize, device=device)
    logits_network, num_classes = (load_logits_network(is_weights, is_sha256, device) if is_weights
                                   else (None, None))
    if log:
        log(f'[image_quality] {len(gen_set)} images of the {gen_set.kind} {gen_set.path} vs {len(ref_set)} of '
            f'{ref_set.path}; network {network.path} (sha256 checked)')
    gen_feats = extract_features(gen_set, network, logits_network, batch_size, progress, 'generated')
    ref_feats = extract_features(ref_set, network, None, batch_size, progress, 'reference')
    metrics = compute_image_quality(gen_feats, ref_feats, fid_dims, kid, kid_subsets, kid_subset_size, is_splits,
                                    IS_MAX_IMAGES, seed)
    protocol = dict(generated=gen_set.path, generated_kind=gen_set.kind, reference=ref_set.path,
                    kept=osp.abspath(kept) if kept else None, max_images=max_images, network=network.path,
                    network_sha256=FID_INCEPTION_SHA256, input_size=INPUT_SIZE, resize=resize,
                    normalisation='(x - 128) / 128 on 0..255', fid_dims=list(fid_dims),
                    kid=dict(degree=3, gamma='1/d', coef=1.0, subsets=kid_subsets, seed=seed) if kid else None,
                    inception_score=dict(weights=osp.abspath(is_weights), classes=num_classes, splits=is_splits,
                                         max_images=IS_MAX_IMAGES) if is_weights else None)
    result = dict(metrics=metrics, protocol=protocol)
    if out:
        atomic_write_text(out, json.dumps(result, indent=1) + '\n')
    if log:
        log(format_table(metrics))
        if out:
            log(f'[image_quality] written to {out}')
    return result

