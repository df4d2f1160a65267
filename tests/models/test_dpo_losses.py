"""DPO losses against direct transcriptions of the published formulas (plain Python floats), their sign, beta
scaling, the SD1.5-script identity, per-sample averaging, and the implicit-reward metrics."""
import math

import pytest
import torch

from posedreamer_mm.models.losses import DiffusionDPOLoss, diffusion_dpo_loss, dpo_errors, flow_dpo_loss
from posedreamer_mm.models.losses.dpo_losses import dpo_loss_from_errors
from posedreamer_mm.models.utils.diffusion_training import flow_add_noise, flow_target
from posedreamer_mm.registry import MODELS

# Four pairs of per-sample errors (model / reference, winner / loser), of the size denoising errors have.
W_M = [0.1000, 0.3000, 0.2500, 0.0800]
L_M = [0.2001, 0.1500, 0.2500, 0.0900]
W_R = [0.1002, 0.2990, 0.2500, 0.0805]
L_R = [0.2000, 0.1510, 0.2500, 0.0898]


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def published_sigmoid(w_m, l_m, w_r, l_r, beta):
    """Wallace et al. 2023: mean over pairs of -log sigmoid(-0.5 beta ((w_m - w_r) - (l_m - l_r)))."""
    out = []
    for a, b, c, d in zip(w_m, l_m, w_r, l_r):
        x = -0.5 * beta * ((a - c) - (b - d))
        out.append(math.log1p(math.exp(-x)))
    return sum(out) / len(out)


def script_form(w_m, l_m, w_r, l_r, beta_script):
    """The SD1.5 script's form: -log sigmoid(beta' (ref_diff - model_diff)), model_diff = w_m - l_m."""
    out = [math.log1p(math.exp(-beta_script * ((c - d) - (a - b)))) for a, b, c, d in zip(w_m, l_m, w_r, l_r)]
    return sum(out) / len(out)


def z_values(w_m=W_M, l_m=L_M, w_r=W_R, l_r=L_R):
    return [-0.5 * ((a - c) - (b - d)) for a, b, c, d in zip(w_m, l_m, w_r, l_r)]


def test_diffusion_dpo_equals_the_published_formula_by_hand():
    # Pair 0 by hand: (w_m - w_r) - (l_m - l_r) = -0.0002 - 0.0001 = -0.0003; x = 0.5 * 5000 * 0.0003 = 0.75.
    one = diffusion_dpo_loss(t(W_M[:1]), t(L_M[:1]), t(W_R[:1]), t(L_R[:1]))
    assert one.loss.item() == pytest.approx(math.log(1 + math.exp(-0.75)), abs=1e-9)
    out = diffusion_dpo_loss(t(W_M), t(L_M), t(W_R), t(L_R))
    assert out.loss.item() == pytest.approx(published_sigmoid(W_M, L_M, W_R, L_R, 5000.0), abs=1e-9)
    # Pair 2 is a tie (all errors equal): loss log 2, reward margin 0.
    assert out.losses[2].item() == pytest.approx(math.log(2), abs=1e-12)


def test_sd15_script_form_with_2500_is_the_same_loss():
    ours = diffusion_dpo_loss(t(W_M), t(L_M), t(W_R), t(L_R), beta=5000.0).loss.item()
    assert ours == pytest.approx(script_form(W_M, L_M, W_R, L_R, 2500.0), abs=1e-12)
    assert ours != pytest.approx(script_form(W_M, L_M, W_R, L_R, 5000.0), abs=1e-3)


def test_flow_dpo_default_beta_is_100_and_the_form_is_the_same():
    out = flow_dpo_loss(t(W_M), t(L_M), t(W_R), t(L_R))
    assert out.loss.item() == pytest.approx(published_sigmoid(W_M, L_M, W_R, L_R, 100.0), abs=1e-12)


def test_flow_errors_use_noise_minus_x0_at_the_shared_noise_and_sigma():
    gen = torch.Generator().manual_seed(0)
    x0_w, x0_l, noise = (torch.randn(2, 4, 3, 3, generator=gen) for _ in range(3))
    sigma = torch.tensor([0.3, 0.8])
    xt_w = flow_add_noise(x0_w, noise, sigma)
    assert torch.allclose(xt_w[1], 0.2 * x0_w[1] + 0.8 * noise[1])
    pred_w, pred_l, ref_w, ref_l = (torch.randn(2, 4, 3, 3, generator=gen) for _ in range(4))
    errs = dpo_errors(pred_w, pred_l, ref_w, ref_l, flow_target(x0_w, noise), flow_target(x0_l, noise))
    by_hand = [((p - (noise - x0)) ** 2).mean(dim=(1, 2, 3)) for p, x0 in
               ((pred_w, x0_w), (pred_l, x0_l), (ref_w, x0_w), (ref_l, x0_l))]
    for a, b in zip(errs, by_hand):
        torch.testing.assert_close(a, b)


def test_lowering_the_winners_error_lowers_the_loss_and_the_losers_raises_nothing_wrong():
    base = diffusion_dpo_loss(t(W_M), t(L_M), t(W_R), t(L_R)).loss.item()
    better_w = diffusion_dpo_loss(t(W_M) - 1e-4, t(L_M), t(W_R), t(L_R)).loss.item()
    worse_l = diffusion_dpo_loss(t(W_M), t(L_M) + 1e-4, t(W_R), t(L_R)).loss.item()
    assert better_w < base and worse_l < base
    # The gradient says the same: d loss / d err_w_model > 0, d loss / d err_l_model < 0 for every pair.
    w, l_ = t(W_M).requires_grad_(), t(L_M).requires_grad_()
    diffusion_dpo_loss(w, l_, t(W_R), t(L_R)).loss.backward()
    assert (w.grad > 0).all() and (l_.grad < 0).all()


@pytest.mark.parametrize('loss_type', ['sigmoid', 'hinge'])
def test_beta_scaling_errors_divided_by_k_and_beta_times_k_agree(loss_type):
    k = 4.0
    a = dpo_loss_from_errors(t(W_M), t(L_M), t(W_R), t(L_R), 5000.0, loss_type).loss.item()
    b = dpo_loss_from_errors(t(W_M) / k, t(L_M) / k, t(W_R) / k, t(L_R) / k, 5000.0 * k, loss_type).loss.item()
    assert a == pytest.approx(b, abs=1e-12)
    # and beta matters: a larger beta sharpens the loss for the well-ordered pair 0
    hi = dpo_loss_from_errors(t(W_M[:1]), t(L_M[:1]), t(W_R[:1]), t(L_R[:1]), 10000.0, loss_type).loss.item()
    lo = dpo_loss_from_errors(t(W_M[:1]), t(L_M[:1]), t(W_R[:1]), t(L_R[:1]), 5000.0, loss_type).loss.item()
    assert hi < lo


def test_hinge_and_ipo_transcribed():
    beta = 5000.0
    zs = z_values()
    hinge = dpo_loss_from_errors(t(W_M), t(L_M), t(W_R), t(L_R), beta, 'hinge')
    assert hinge.loss.item() == pytest.approx(sum(max(0.0, 1 - beta * z) for z in zs) / 4, abs=1e-12)
    ipo = dpo_loss_from_errors(t(W_M), t(L_M), t(W_R), t(L_R), beta, 'ipo')
    assert ipo.loss.item() == pytest.approx(sum((z - 1 / (2 * beta)) ** 2 for z in zs) / 4, rel=1e-12)
    # IPO uses the beta it is given: its minimum sits at z = 1 / (2 beta), for another beta too.
    z0 = 1 / (2 * 100.0)
    at_min = dpo_loss_from_errors(t([0.0]), t([2 * z0]), t([0.0]), t([0.0]), 100.0, 'ipo')
    assert at_min.loss.item() == pytest.approx(0.0, abs=1e-20)
    assert dpo_loss_from_errors(t([0.0]), t([2 * z0]), t([0.0]), t([0.0]), 5000.0, 'ipo').loss.item() > 1e-6


def test_loss_is_the_mean_of_per_sample_losses_not_the_loss_of_the_mean():
    # Two pairs with opposite margins: per-sample mean is softplus(-x)/2 + softplus(x)/2 > log 2 = mean-inside.
    w_m, l_m, w_r, l_r = [0.1, 0.1], [0.1, 0.1], [0.1004, 0.0996], [0.1, 0.1]
    out = diffusion_dpo_loss(t(w_m), t(l_m), t(w_r), t(l_r))
    x = 0.5 * 5000 * 0.0004
    expected = 0.5 * (math.log1p(math.exp(-x)) + math.log1p(math.exp(x)))
    assert out.loss.item() == pytest.approx(expected, abs=1e-9)
    assert out.loss.item() > math.log(2) + 0.05


def test_implicit_accuracy_counts_ties_as_half_and_the_margin_is_beta_z():
    out = diffusion_dpo_loss(t(W_M), t(L_M), t(W_R), t(L_R))
    zs = z_values()
    # z > 0 for pairs 0 and 3 (winner relatively better than under the reference), z < 0 for pair 1, tie for 2.
    assert [z > 0 for z in zs] == [True, False, False, True] and zs[1] < 0 and zs[2] == 0
    assert out.implicit_acc.item() == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert out.reward_margin.item() == pytest.approx(5000.0 * sum(zs) / 4, rel=1e-9)
    torch.testing.assert_close(out.reward_w, -0.5 * 5000.0 * (t(W_M) - t(W_R)))
    torch.testing.assert_close(out.reward_l, -0.5 * 5000.0 * (t(L_M) - t(L_R)))
    assert set(out.metrics('dpo/')) == {'dpo/implicit_acc', 'dpo/reward_margin', 'dpo/model_mse'}


def test_beta_is_a_float_whatever_its_type_and_bad_betas_are_refused():
    a = diffusion_dpo_loss(t(W_M), t(L_M), t(W_R), t(L_R), beta=2500).loss
    b = diffusion_dpo_loss(t(W_M), t(L_M), t(W_R), t(L_R), beta=2500.0).loss
    assert torch.equal(a, b)
    half = diffusion_dpo_loss(t(W_M), t(L_M), t(W_R), t(L_R), beta=0.5).loss.item()
    assert half == pytest.approx(published_sigmoid(W_M, L_M, W_R, L_R, 0.5), abs=1e-12)   # not truncated to 0
    for bad in (0, -1.0, float('nan'), float('inf'), True, '5000'):
        with pytest.raises(ValueError, match='beta must be a finite number > 0'):
            diffusion_dpo_loss(t(W_M), t(L_M), t(W_R), t(L_R), beta=bad)
    with pytest.raises(ValueError, match="loss_type must be one of"):
        diffusion_dpo_loss(t(W_M), t(L_M), t(W_R), t(L_R), loss_type='kto')
    with pytest.raises(ValueError, match=r'four \(B,\) tensors'):
        diffusion_dpo_loss(t(W_M), t(L_M[:3]), t(W_R), t(L_R))


def test_half_precision_errors_are_promoted_and_reference_gets_no_gradient():
    w, l_ = (torch.tensor(v, dtype=torch.bfloat16, requires_grad=True) for v in (W_M, L_M))
    w_r, l_r = (torch.tensor(v, dtype=torch.bfloat16, requires_grad=True) for v in (W_R, L_R))
    out = diffusion_dpo_loss(w, l_, w_r, l_r)
    assert out.loss.dtype == torch.float32
    # The transcription on the bfloat16-rounded errors, in float64: a bfloat16 logit would be off by ~1e-2.
    vals = [[float(x) for x in v.detach()] for v in (w, l_, w_r, l_r)]
    assert out.loss.item() == pytest.approx(published_sigmoid(*vals, 5000.0), abs=1e-6)
    out.loss.backward()
    assert w_r.grad is None and l_r.grad is None and w.grad is not None


def test_registered_module_applies_its_settings():
    loss = MODELS.build(dict(type='DiffusionDPOLoss', beta=100.0, loss_type='sigmoid', loss_weight=2.0))
    assert isinstance(loss, DiffusionDPOLoss)
    out = loss(t(W_M), t(L_M), t(W_R), t(L_R))
    assert out.loss.item() == pytest.approx(2 * published_sigmoid(W_M, L_M, W_R, L_R, 100.0), abs=1e-12)
    with pytest.raises(ValueError, match='loss_type must be one of'):
        DiffusionDPOLoss(loss_type='dpo')


def test_default_form_is_the_published_sigmoid_and_metrics_are_unprefixed_by_default():
    # mutmut survivors: the default loss_type and the default metrics prefix were never exercised.
    out = dpo_loss_from_errors(t(W_M), t(L_M), t(W_R), t(L_R), beta=5000.0)
    assert out.loss.item() == pytest.approx(published_sigmoid(W_M, L_M, W_R, L_R, 5000.0), abs=1e-9)
    assert set(out.metrics()) == {'implicit_acc', 'reward_margin', 'model_mse'}
    assert set(out.metrics('dpo/')) == {'dpo/implicit_acc', 'dpo/reward_margin', 'dpo/model_mse'}


def test_model_mse_is_the_mean_of_the_model_errors_and_the_module_defaults_are_the_paper_s():
    # mutmut survivors: model_mse's value, the per-pair losses under loss_weight, DiffusionDPOLoss's defaults.
    out = dpo_loss_from_errors(t(W_M), t(L_M), t(W_R), t(L_R), beta=5000.0)
    assert out.model_mse.item() == pytest.approx(sum(W_M + L_M) / 8, abs=1e-12)   # 0.178125, over all 8 errors
    default = DiffusionDPOLoss()(t(W_M), t(L_M), t(W_R), t(L_R))
    assert default.loss.item() == pytest.approx(published_sigmoid(W_M, L_M, W_R, L_R, 5000.0), abs=1e-9)
    weighted = DiffusionDPOLoss(beta=100.0, loss_weight=2.0)(t(W_M), t(L_M), t(W_R), t(L_R))
    for i in range(4):
        one = published_sigmoid(W_M[i:i + 1], L_M[i:i + 1], W_R[i:i + 1], L_R[i:i + 1], 100.0)
        assert weighted.losses[i].item() == pytest.approx(2 * one, abs=1e-12)


def test_the_widest_error_dtype_is_kept():
    """Mixed precisions promote over all four errors (not only the first): bfloat16 model errors with float64
    reference errors give a float64 loss, equal to the float64 transcription on the same (rounded) values."""
    w, l_ = (torch.tensor([0.30, 0.20], dtype=torch.bfloat16) for _ in range(2))
    w_r = torch.tensor([0.31, 0.18], dtype=torch.float64)
    l_r = torch.tensor([0.29, 0.21], dtype=torch.float64)
    out = diffusion_dpo_loss(w, l_, w_r, l_r, beta=5000.0)
    assert out.loss.dtype == torch.float64
    z = -0.5 * ((w.double() - w_r) - (l_.double() - l_r))
    torch.testing.assert_close(out.loss, -torch.nn.functional.logsigmoid(5000.0 * z).mean(), rtol=1e-12, atol=0)


def test_numpy_betas_are_numbers_and_a_bad_loss_weight_is_refused():
    """A beta from numpy (a sweep's np.float32 / np.int64) is a number like any other (it was refused as 'not a
    finite number > 0'). loss_weight scales the one loss DiffusionDPO trains: NaN or inf made every step's loss
    non-finite (reported as a float16 overflow), a negative weight ascends the loss (trains towards the losers) and
    0 trains nothing, all without a word; a string was converted."""
    import numpy as np
    want = published_sigmoid(W_M, L_M, W_R, L_R, 5000.0)
    for beta in (np.float32(5000.0), np.int64(5000), np.float64(5000.0)):
        assert diffusion_dpo_loss(t(W_M), t(L_M), t(W_R), t(L_R), beta=beta).loss.item() == pytest.approx(want,
                                                                                                        abs=1e-9)
        assert type(DiffusionDPOLoss(beta=beta).beta) is float
    for bad in (np.float32('nan'), np.int64(0)):
        with pytest.raises(ValueError, match='beta must be a finite number > 0'):
            DiffusionDPOLoss(beta=bad)
    for bad in (float('nan'), float('inf'), -1.0, 0, True, '2'):
        with pytest.raises(ValueError, match=r'loss_weight must be a finite number > 0, got'):
            DiffusionDPOLoss(loss_weight=bad)
    assert DiffusionDPOLoss(loss_weight=np.float32(2.0))(t(W_M), t(L_M), t(W_R), t(L_R)).loss.item() == \
        pytest.approx(2 * want, abs=1e-9)
