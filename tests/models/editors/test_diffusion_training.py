"""models/utils/diffusion_training.py against the formulas and diffusers' own schedulers on the same numbers."""
import math

import pytest
import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_density_for_timestep_sampling

from posedreamer_mm.models.utils.diffusion_training import (
    PREDICTION_TYPES,
    ddpm_add_noise,
    ddpm_velocity,
    diffusion_target,
    dropout_mask,
    flow_add_noise,
    flow_target,
    per_sample_mse,
    sample_logit_normal,
    sample_uniform_timesteps,
    shift_sigmas,
    step_generator,
)


def _sd_scheduler(**kw):
    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', num_train_timesteps=1000,
                         **kw)


def test_uniform_timesteps_cover_every_step_equally():
    t = sample_uniform_timesteps(200_000, 1000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and int(t.min()) == 0 and int(t.max()) == 999
    counts = torch.bincount(t // 100, minlength=10).float()  # ten bins of 100 steps, 20,000 expected each
    assert (counts - 20_000).abs().max() < 600  # ~4 sigma of a binomial(200k, 0.1)
    assert abs(t.float().mean().item() - 499.5) < 3
    with pytest.raises(ValueError, match='num_train_timesteps'):
        sample_uniform_timesteps(4, 0)


def test_logit_normal_matches_its_cdf():
    """P(u <= x) = Phi((logit(x) - mean) / std): the Kolmogorov-Smirnov distance of 100k draws is small."""
    mean, std = 0.5, 0.8
    u = sample_logit_normal(100_000, mean, std, generator=torch.Generator().manual_seed(1)).double().sort().values
    assert 0 < u.min() and u.max() < 1
    cdf = 0.5 * (1 + torch.erf((torch.log(u / (1 - u)) - mean) / (std * math.sqrt(2))))
    empirical = torch.arange(1, len(u) + 1, dtype=torch.float64) / len(u)
    assert (cdf - empirical).abs().max() < 0.006  # KS critical value at 1e-3 is 1.95 / sqrt(n) = 0.0062
    # and it is not the uniform density (the test can tell them apart)
    assert (u - empirical).abs().max() > 0.05
    with pytest.raises(ValueError, match='std'):
        sample_logit_normal(3, std=0)


def test_shift_sigmas_matches_the_flow_match_scheduler():
    plain = FlowMatchEulerDiscreteScheduler(shift=1.0).sigmas
    shifted = FlowMatchEulerDiscreteScheduler(shift=3.0).sigmas
    torch.testing.assert_close(shift_sigmas(plain, 3.0), shifted, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(shift_sigmas(plain, 1.0), plain)
    assert shift_sigmas(torch.tensor([0.5]), 3.0).item() == pytest.approx(0.75)  # 1.5 / 2 by hand


@pytest.mark.parametrize('prediction_type', ['epsilon', 'v_prediction'])
def test_ddpm_noise_and_targets_equal_the_diffusers_scheduler(prediction_type):
    sched = _sd_scheduler(prediction_type=prediction_type)
    gen = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(6, 4, 8, 8, generator=gen), torch.randn(6, 4, 8, 8, generator=gen)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    torch.testing.assert_close(ddpm_add_noise(sched.alphas_cumprod, x0, noise, t), sched.add_noise(x0, noise, t),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ddpm_velocity(sched.alphas_cumprod, x0, noise, t), sched.get_velocity(x0, noise, t),
                               rtol=1e-5, atol=1e-6)
    expected = noise if prediction_type == 'epsilon' else sched.get_velocity(x0, noise, t)
    got = diffusion_target(sched.config.prediction_type, x0, noise, t, sched.alphas_cumprod)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r'timesteps must lie in \[0, 1000\)'):
        ddpm_add_noise(sched.alphas_cumprod, x0, noise, torch.tensor([0, 1, 2, 3, 4, 1000]))


def test_flow_noise_and_target_equal_the_flow_match_scheduler():
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    gen = torch.Generator().manual_seed(3)
    x0, noise = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    idx = [0, 400, 999]
    got = flow_add_noise(x0, noise, sched.sigmas[idx])
    for i, k in enumerate(idx):
        want = sched.scale_noise(x0[i:i + 1], sched.timesteps[k:k + 1], noise[i:i + 1])
        torch.testing.assert_close(got[i:i + 1], want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(flow_target(x0, noise), noise - x0)
    torch.testing.assert_close(diffusion_target('flow', x0, noise), noise - x0)
    with pytest.raises(ValueError, match="'sample'"):
        diffusion_target('sample', x0, noise)


def test_dropout_mask_probability_and_edges():
    gen = torch.Generator().manual_seed(4)
    assert not dropout_mask(1000, 0.0, generator=gen).any()
    assert dropout_mask(1000, 1.0, generator=gen).all()
    frac = dropout_mask(100_000, 0.3, generator=gen).float().mean().item()
    assert abs(frac - 0.3) < 0.006  # 4 sigma
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        dropout_mask(4, 1.5)


def test_per_sample_mse_by_hand():
    pred = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0], [3.0, 1.0]])
    torch.testing.assert_close(per_sample_mse(pred, target), torch.tensor([2.0, 5.0]))
    assert per_sample_mse(pred.bfloat16(), target).dtype == torch.float32
    with pytest.raises(ValueError, match='differ in shape'):
        per_sample_mse(pred, target[:1])


def test_step_generator_depends_on_seed_step_and_rank_only():
    draw = lambda *a: torch.randn(4, generator=step_generator(*a))  # noqa: E731
    torch.testing.assert_close(draw(0, 10, 0), draw(0, 10, 0))
    for other in [(1, 10, 0), (0, 11, 0), (0, 10, 1)]:
        assert not torch.equal(draw(0, 10, 0), draw(*other))


# Tests below were prompted by mutmut survivors (docs/testing.md, "Mutation testing").

def test_logit_normal_draws_equal_diffusers_scheme_with_the_sd3_defaults():
    """Same generator, same numbers as diffusers' ``compute_density_for_timestep_sampling('logit_normal', ...)``;
    the defaults are the SD3 / diffusers training scripts' ``logit_mean=0``, ``logit_std=1``."""
    ours = sample_logit_normal(1000, generator=torch.Generator().manual_seed(5))
    theirs = compute_density_for_timestep_sampling('logit_normal', 1000, logit_mean=0.0, logit_std=1.0,
                                                   generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(ours, theirs)
    ours = sample_logit_normal(1000, 0.5, 0.8, generator=torch.Generator().manual_seed(6))
    theirs = compute_density_for_timestep_sampling('logit_normal', 1000, logit_mean=0.5, logit_std=0.8,
                                                   generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(ours, theirs)


def test_draws_without_a_generator_use_the_global_rng():
    torch.manual_seed(7)
    want = torch.randint(0, 10, (5,))
    torch.manual_seed(7)
    torch.testing.assert_close(sample_uniform_timesteps(5, 10), want)
    torch.manual_seed(8)
    want = torch.rand(5) < 0.5
    torch.manual_seed(8)
    torch.testing.assert_close(dropout_mask(5, 0.5), want)


def test_a_single_train_timestep_is_valid():
    assert sample_uniform_timesteps(6, 1, generator=torch.Generator().manual_seed(0)).tolist() == [0] * 6


def test_shift_default_is_the_identity_and_a_zero_shift_is_refused():
    sigmas = torch.tensor([0.1, 0.5, 0.9])
    torch.testing.assert_close(shift_sigmas(sigmas), sigmas)
    with pytest.raises(ValueError, match='shift must be > 0'):
        shift_sigmas(sigmas, 0.0)


def test_every_listed_prediction_type_has_a_target_and_v_needs_the_schedule():
    # PREDICTION_TYPES is what base_diffusion.py accepts from a scheduler config: diffusers' two training
    # prediction types of the DDPM family, plus 'flow'.
    assert PREDICTION_TYPES == ('epsilon', 'v_prediction', 'flow')
    sched = _sd_scheduler()
    x0, noise, t = torch.ones(2, 3), torch.zeros(2, 3), torch.tensor([10, 20])
    for prediction_type in PREDICTION_TYPES:
        assert diffusion_target(prediction_type, x0, noise, t, sched.alphas_cumprod).shape == (2, 3)
    for missing in (dict(t=None, alphas_cumprod=sched.alphas_cumprod), dict(t=t, alphas_cumprod=None)):
        with pytest.raises(ValueError, match="'v_prediction' target needs the timesteps"):
            diffusion_target('v_prediction', x0, noise, **missing)


def test_dropout_with_p_zero_drops_nothing_even_on_an_exact_zero_draw():
    # torch's CPU generator with seed 1 draws exactly 0.0 at position 2,753,120 of torch.rand: 'u <= p' would
    # drop that sample at p = 0, which the docstring promises never happens.
    n = 2_753_121
    u = torch.rand(n, generator=torch.Generator().manual_seed(1))
    assert u[-1].item() == 0.0
    assert not dropout_mask(n, 0.0, generator=torch.Generator().manual_seed(1)).any()


def test_per_sample_mse_of_a_non_square_batch():
    pred = torch.zeros(3, 2)
    target = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 3.0]])
    torch.testing.assert_close(per_sample_mse(pred, target), torch.tensor([1.0, 2.0, 4.5]))


def test_step_generator_default_rank_is_0_and_many_triples_give_distinct_streams():
    torch.testing.assert_close(torch.randn(4, generator=step_generator(3, 7)),
                               torch.randn(4, generator=step_generator(3, 7, 0)))
    seeds = {step_generator(s, k, r).initial_seed() for s in range(4) for k in range(10) for r in range(4)}
    assert len(seeds) == 160
