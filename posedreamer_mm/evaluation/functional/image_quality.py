"""Image-quality maths on feature vectors: Frechet distance (FID), KID and the Inception Score (docs/image_quality.md).

Pure torch, float64, no network: the features come from :mod:`posedreamer_mm.evaluation.inception` (or any
extractor). The formulas are those of torchmetrics' ``FrechetInceptionDistance``, ``KernelInceptionDistance`` and
``InceptionScore`` (what the reference used), written out here so that they run on stored features and on sets of
different sizes; tests/evaluation/test_image_quality.py compares each one with torchmetrics on the same numbers.

- **FID** (Heusel et al., NeurIPS 2017, https://arxiv.org/abs/1706.08500): ``|mu1 - mu2|^2 + tr(S1) + tr(S2) -
  2 tr((S1 S2)^1/2)`` with unbiased covariances; ``tr((S1 S2)^1/2)`` is the sum of the square roots of the
  eigenvalues of ``S1 S2`` (torchmetrics' definition, no ``scipy.linalg.sqrtm``), computed with symmetric
  eigendecompositions, or in image space when there are fewer images than features.
- **KID** (Binkowski et al., ICLR 2018, https://arxiv.org/abs/1801.01401): the unbiased squared MMD with the
  polynomial kernel ``k(x, y) = (gamma x.y + coef)^degree`` (``gamma = 1/d``, ``coef = 1``, ``degree = 3``),
  averaged over random subsets; mean and standard deviation over the subsets.
- **Inception Score** (Salimans et al., NeurIPS 2016, https://arxiv.org/abs/1606.03498): ``exp(E_x KL(p(y|x) ||
  p(y)))`` per split of the images, mean and standard deviation over the splits.
"""
from __future__ import annotations

import numpy as np
import torch


def _as_features(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).to(torch.float64)
    if t.ndim != 2 or t.shape[0] < 2:
        raise ValueError(f'{name}: expected features of shape (N, D) with N >= 2, got {tuple(t.shape)}')
    if not torch.isfinite(t).all():
        raise ValueError(f'{name}: features contain NaN or inf')
    return t


def feature_statistics(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (float64) of ``features (N, D)``, ``N >= 2``."""
    f = _as_features(features, 'features')
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def _sqrt_psd(sigma: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a PSD matrix (eigenvalues rounded below 0 are taken as 0)."""
    w, v = torch.linalg.eigh((sigma + sigma.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between the Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (squared; FID's unit).

    ``tr((S1 S2)^1/2)`` is computed as ``sum sqrt(eig(A S2 A))`` with ``A = S1^1/2``: ``A S2 A`` is symmetric and
    similar to ``S1 S2``, so two symmetric eigendecompositions replace a general one (several times faster at
    2048 x 2048, and its eigenvalues are real by construction).

    Args:
        mu1, mu2: means ``(D,)``.
        sigma1, sigma2: covariances ``(D, D)``.
    """
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64) for m in (mu1, mu2))
    sigma1, sigma2 = (torch.as_tensor(s, dtype=torch.float64) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f'frechet_distance: shapes do not match: mu {tuple(mu1.shape)} / {tuple(mu2.shape)}, '
                         f'sigma {tuple(sigma1.shape)} / {tuple(sigma2.shape)}')
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * cross)


def fid_from_features(real, fake) -> float:
    """FID between two feature sets ``(N1, D)`` and ``(N2, D)`` (the sets may differ in size).

    With fewer images than features (``min(N1, N2) <= D``, e.g. a few hundred images at 2048-d) the covariances
    have rank < N and the cross term is taken in image space: with centred features ``X1``, ``X2``, the non-zero
    eigenvalues of ``S1 S2`` are the squared singular values of ``X1 X2^T / sqrt((N1 - 1)(N2 - 1))``, so
    ``tr((S1 S2)^1/2)`` is that matrix's nuclear norm (exact, an ``N1 x N2`` SVD instead of ``D x D`` work).
    """
    x1, x2 = _as_features(real, 'real'), _as_features(fake, 'fake')
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f'fid_from_features: feature sizes differ ({x1.shape[1]} vs {x2.shape[1]})')
    if min(x1.shape[0], x2.shape[0]) > x1.shape[1]:
        mu1, s1 = feature_statistics(x1)
        mu2, s2 = feature_statistics(x2)
        return frechet_distance(mu1, s1, mu2, s2)
    c1, c2 = x1 - x1.mean(0), x2 - x2.mean(0)
    n1, n2 = x1.shape[0] - 1, x2.shape[0] - 1
    cross = torch.linalg.svdvals(c1 @ c2.T).sum() / np.sqrt(n1 * n2)
    traces = c1.square().sum() / n1 + c2.square().sum() / n2
    return float((x1.mean(0) - x2.mean(0)).square().sum() + traces - 2 * cross)


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3, gamma: float | None = None,
                      coef: float = 1.0) -> torch.Tensor:
    """``(gamma x_i . y_j + coef)^degree``, ``(N, M)``; ``gamma`` defaults to ``1 / D``."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * gamma + coef) ** degree


def mmd2_unbiased(k_xx: torch.Tensor, k_xy: torch.Tensor, k_yy: torch.Tensor) -> float:
    """Unbiased squared MMD from the kernel matrices ``(m, m)``, ``(m, n)``, ``(n, n)`` (diagonals left out of the
    within-set means; ``m, n >= 2``)."""
    m, n = k_xx.shape[0], k_yy.shape[0]
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.sum() / (m * n))


def kernel_inception_distance(real, fake, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
                              gamma: float | None = None, coef: float = 1.0, seed: int = 0) -> tuple[float, float]:
    """KID: mean and standard deviation of the unbiased polynomial-kernel MMD^2 over ``subsets`` random subsets.

    Each subset draws ``min(subset_size, N_real, N_fake)`` rows of each set without replacement (torchmetrics
    raises instead when ``subset_size`` exceeds a set; here small sets use all their rows). Draws come from a
    ``torch.Generator`` seeded with ``seed``, so a result is reproducible. With ``subsets=1`` and a subset size
    covering both sets the value is exact (MMD does not depend on the row order).

    Returns:
        ``(kid_mean, kid_std)``; ``kid_std`` is 0 for one subset.
    """
    x, y = _as_features(real, 'real'), _as_features(fake, 'fake')
    if x.shape[1] != y.shape[1]:
        raise ValueError(f'kernel_inception_distance: feature sizes differ ({x.shape[1]} vs {y.shape[1]})')
    if subsets < 1 or subset_size < 2:
        raise ValueError(f'kernel_inception_distance: subsets must be >= 1 and subset_size >= 2, got {subsets}, '
                         f'{subset_size}')
    size = min(subset_size, x.shape[0], y.shape[0])
    gen = torch.Generator().manual_seed(int(seed))
    values = []
    for _ in range(subsets):
        xs = x[torch.randperm(x.shape[0], generator=gen)[:size]]
        ys = y[torch.randperm(y.shape[0], generator=gen)[:size]]
        values.append(mmd2_unbiased(polynomial_kernel(xs, xs, degree, gamma, coef),
                                    polynomial_kernel(xs, ys, degree, gamma, coef),
                                    polynomial_kernel(ys, ys, degree, gamma, coef)))
    values = torch.tensor(values, dtype=torch.float64)
    return float(values.mean()), float(values.std()) if subsets > 1 else 0.0


def inception_score(logits, splits: int = 10, seed: int | None = 0) -> tuple[float, float]:
    """Inception Score from classifier logits ``(N, C)``: mean and standard deviation over ``splits`` splits.

    Per split: ``exp(mean_i KL(softmax(l_i) || mean_j softmax(l_j)))``. ``seed`` shuffles the rows before they
    are split (as torchmetrics' ``InceptionScore`` does with its own random permutation); ``None`` keeps the order.
    Known answers: ``N`` images each certain of a different class score ``N`` (one split); identical rows score 1.
    """
    t = _as_features(logits, 'logits')
    if not 1 <= splits <= t.shape[0]:
        raise ValueError(f'inception_score: splits must be in [1, {t.shape[0]}] (the number of images), got {splits}')
    if seed is not None:
        t = t[torch.randperm(t.shape[0], generator=torch.Generator().manual_seed(int(seed)))]
    log_p = torch.log_softmax(t, dim=1)
    scores = []
    for chunk in log_p.chunk(splits):
        log_marginal = torch.logsumexp(chunk, dim=0) - np.log(chunk.shape[0])
        kl = (chunk.exp() * (chunk - log_marginal)).sum(1).mean()
        scores.append(kl.exp())
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std()) if len(scores) > 1 else 0.0
