"""The 'mode' timestep density of models/utils/diffusion_training.py against the SD3 paper's formula and diffusers'
``compute_density_for_timestep_sampling('mode', ...)`` on the same generator."""
import math

import pytest
import torch
from diffusers.training_utils import compute_density_for_timestep_sampling

from posedreamer_mm.models.utils.diffusion_training import (
    MODE_SCALE_RANGE,
    mode_density_map,
    sample_mode_timesteps,
)


def test_the_map_is_the_paper_s_formula_on_fixed_values():
    u = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    s = 1.29
    # f(u) = 1 - u - s (cos^2(pi u / 2) - 1 + u), written out per value
    expected = [1 - x - s * (math.cos(math.pi * x / 2) ** 2 - 1 + x) for x in u.tolist()]
    torch.testing.assert_close(mode_density_map(u, s), torch.tensor(expected, dtype=torch.float64))
    assert mode_density_map(u, s)[[0, 2, 4]].tolist() == pytest.approx([1.0, 0.5, 0.0], abs=1e-12)
    torch.testing.assert_close(mode_density_map(u, 0.0), 1 - u)                 # s = 0: the uniform density
    torch.testing.assert_close(mode_density_map(1 - u, s), 1 - mode_density_map(u, s))   # symmetric


def test_draws_equal_diffusers_mode_scheme_on_one_generator():
    ours = sample_mode_timesteps(1000, 1.29, generator=torch.Generator().manual_seed(3))
    theirs = compute_density_for_timestep_sampling('mode', 1000, mode_scale=1.29,
                                                   generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, theirs.float())
    assert ours.dtype == torch.float32 and 0 <= float(ours.min()) and float(ours.max()) <= 1


def test_mode_scale_concentrates_the_middle_and_is_bounded():
    u = sample_mode_timesteps(100_000, 1.29, generator=torch.Generator().manual_seed(0))
    flat = sample_mode_timesteps(100_000, 0.0, generator=torch.Generator().manual_seed(0))
    middle = lambda x: ((x > 0.25) & (x < 0.75)).float().mean().item()  # noqa: E731
    assert abs(middle(flat) - 0.5) < 0.01 and middle(u) > 0.6 and abs(u.mean().item() - 0.5) < 0.01
    lo, hi = MODE_SCALE_RANGE
    assert hi == pytest.approx(2 / (math.pi - 2))
    with pytest.raises(ValueError, match='mode_scale must be in'):
        sample_mode_timesteps(4, hi + 0.01)
    with pytest.raises(ValueError, match='mode_scale must be in'):
        sample_mode_timesteps(4, lo - 0.01)


def test_defaults_are_the_reference_mode_scale_and_the_range_ends_are_valid():
    # mutmut survivors: diffusers' training scripts default to mode_scale 1.29; the SD3 paper's range is
    # -1 <= s <= 2 / (pi - 2), both ends included.
    u = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(mode_density_map(u), mode_density_map(u, 1.29))
    theirs = compute_density_for_timestep_sampling('mode', 100, mode_scale=1.29,
                                                   generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(sample_mode_timesteps(100, generator=torch.Generator().manual_seed(4)), theirs)
    for s in (-1.0, 2 / (math.pi - 2)):
        v = sample_mode_timesteps(1000, s, generator=torch.Generator().manual_seed(0))
        assert 0 <= float(v.min()) and float(v.max()) <= 1
    with pytest.raises(ValueError, match='mode_scale must be in'):
        sample_mode_timesteps(4, -1.01)
