"""BaseDiffusionTrainer: frozen parts outside the state, the per-iteration generator, the loss by hand."""
import copy

import pytest
import torch
from mmengine.logging import MessageHub

from posedreamer_mm.models.editors.base_diffusion import BaseDiffusionTrainer
from posedreamer_mm.models.utils.diffusion_training import step_generator


class Toy(BaseDiffusionTrainer):
    """Latents = images; prediction = a trainable 1x1 conv of the noisy latents (the control and text unused)."""

    trainable_module_names = ('head',)

    def __init__(self, **kw):
        super().__init__(**kw)
        self.head = torch.nn.Conv2d(3, 3, 1)
        self.add_frozen('encoder', torch.nn.Linear(2, 2))
        self.alphas_cumprod = torch.linspace(0.99, 0.01, 10)
        self.num_train_timesteps = 10

    def encode_prompts(self, prompts, train, generator=None):
        return dict(prompts=self.drop_prompts(prompts, generator) if train else prompts)

    def encode_images(self, images):
        return images

    def encode_controls(self, controls, train, generator=None):
        return self.drop_controls(controls, generator) if train else controls

    def predict(self, noisy, t, cond, control):
        return self.head(noisy)


def _inputs():
    gen = torch.Generator().manual_seed(0)
    return dict(image=torch.rand(2, 3, 4, 4, generator=gen) * 2 - 1, control=torch.rand(2, 3, 4, 4, generator=gen))


def test_frozen_modules_are_outside_the_state_and_the_optimiser():
    model = Toy()
    assert set(model.state_dict()) == {'head.weight', 'head.bias'}
    assert {n for n, _ in model.named_parameters()} == {'head.weight', 'head.bias'}
    model.train()
    assert model.head.training and not model.encoder.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    twin = copy.deepcopy(model)  # what mmengine's EMAHook does
    assert twin.encoder is model.encoder and twin.head is not model.head
    assert twin.state_dict().keys() == model.state_dict().keys()


def test_loss_is_the_mse_to_the_target_with_the_iteration_s_noise():
    model = Toy(noise_seed=7)
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', 5)
    try:
        loss = model(_inputs(), dict(prompt=['a', 'b']))['loss']
        # The same draws by hand: generator of (seed 7, iter 5, rank 0); noise first, then timesteps.
        gen = step_generator(7, 5, 0)
        x0 = _inputs()['image']
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 10, (2,), generator=gen)
        a = model.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        want = ((model.head(noisy) - noise) ** 2).mean()
        torch.testing.assert_close(loss, want)
        again = model(_inputs(), dict(prompt=['a', 'b']))['loss']  # same iteration -> same draws
        torch.testing.assert_close(again, loss)
        hub.update_info('iter', 6)
        assert not torch.equal(model(_inputs(), dict(prompt=['a', 'b']))['loss'], loss)
    finally:
        hub.pop_info('iter')


def test_dropout_replaces_prompts_and_zeroes_controls():
    model = Toy(caption_dropout=1.0, control_dropout=1.0)
    assert model.encode_prompts(['a', 'b'], train=True) == dict(prompts=['', ''])
    assert model.encode_prompts(['a', 'b'], train=False) == dict(prompts=['a', 'b'])
    assert not model.encode_controls(_inputs()['control'], train=True).any()
    for bad in (dict(caption_dropout=1.5), dict(control_dropout=-0.1)):
        with pytest.raises(ValueError, match=r'dropout must lie in \[0, 1\]'):
            Toy(**bad)
    half = Toy(caption_dropout=0.5, control_dropout=0.5)
    gen = torch.Generator().manual_seed(0)
    dropped = half.drop_controls(torch.ones(4000, 1, 1, 1), gen).flatten()
    assert set(dropped.tolist()) == {0.0, 1.0} and abs(dropped.mean().item() - 0.5) < 0.05
    prompts = half.drop_prompts(['x'] * 4000, gen)
    assert set(prompts) == {'', 'x'} and abs(prompts.count('') / 4000 - 0.5) < 0.05


def test_a_non_finite_loss_stops_before_the_update_naming_samples_and_iteration():
    """mmengine's OptimWrapper would step on NaN gradients (clip_grad_norm_ then turns every weight NaN) and only
    log 'loss: nan'; the trainer stops first, so the last checkpoint is still good."""
    model = Toy(noise_seed=0)
    model.head.weight.data[0, 0, 0, 0] = float('nan')
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', 41)
    try:
        with pytest.raises(FloatingPointError, match=r"iteration 42.*\['s7', 's9'\].*timesteps \[\d+, \d+\]"):
            model(_inputs(), dict(prompt=['a', 'b'], sample_id=['s7', 's9']))
    finally:
        hub.pop_info('iter')
    assert model(_inputs(), dict(prompt=['a', 'b']), mode='tensor').isnan().all()  # 'tensor' mode reports, no raise


def test_ema_copy_averages_only_the_trained_state_and_reloads_strictly():
    """mmengine's EMA wrapper holds the trainer as ``module.``: its state is the trained modules only, and the
    strict check sees through the prefix (a resumed EMA loads; a foreign one is refused)."""
    from mmengine.model import ExponentialMovingAverage

    from posedreamer_mm.apis.checkpoint import CheckpointMismatchError
    model = Toy()
    ema = ExponentialMovingAverage(model, momentum=0.5, update_buffers=True)
    assert ema.module.encoder is model.encoder
    assert set(ema.state_dict()) == {'steps', 'module.head.weight', 'module.head.bias'}
    with torch.no_grad():
        model.head.weight.add_(1.0)
    before = ema.module.head.weight.clone()
    ema.update_parameters(model)  # first call copies
    ema.update_parameters(model)
    torch.testing.assert_close(ema.module.head.weight, model.head.weight)
    assert not torch.equal(before, ema.module.head.weight)
    other = ExponentialMovingAverage(Toy(), momentum=0.5, update_buffers=True)
    other.load_state_dict(ema.state_dict())
    torch.testing.assert_close(other.module.head.weight, ema.module.head.weight)
    bad = {k: v for k, v in ema.state_dict().items() if k != 'module.head.bias'}
    with pytest.raises(CheckpointMismatchError, match=r"1 missing \['head.bias'\]"):
        other.load_state_dict(bad, strict=False)


class Pairs(torch.utils.data.Dataset):
    """Four uint8 (image, control) pairs of side ``size`` with captions, as PackControlPair packs them."""

    def __init__(self, size=4):
        self.size = size

    def __len__(self):
        return 4

    def __getitem__(self, i):
        gen = torch.Generator().manual_seed(i)
        shape = (3, self.size, self.size)
        return dict(inputs=dict(image=torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8),
                                control=torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)),
                    data_samples=dict(prompt=f'p{i}'))


def runner(work_dir, name, model, max_iters, resume=False, load_from=None, size=4):
    """An mmengine Runner training ``model`` on :class:`Pairs` with SGD, a checkpoint every 2 iterations."""
    from mmengine.runner import Runner
    return Runner(model=model, work_dir=str(work_dir), experiment_name=name, train_cfg=dict(by_epoch=False,
                  max_iters=max_iters), train_dataloader=dict(dataset=Pairs(size), batch_size=2, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=False), collate_fn=dict(type='pseudo_collate')),
                  optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)), resume=resume, load_from=load_from,
                  default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                                     logger=dict(type='LoggerHook', interval=1)), default_scope='posedreamer_mm')


@pytest.mark.parametrize('change, setting, saved, config', [
    (dict(caption_dropout=0.5), 'caption_dropout', '0.0', '0.5'),
    (dict(control_dropout=0.25), 'control_dropout', '0.0', '0.25'),
    (dict(prediction_type='v_prediction'), 'prediction_type', "'epsilon'", "'v_prediction'"),
])
def test_a_resume_that_changes_the_objective_stops_naming_the_setting(tmp_path, change, setting, saved, config):
    """The checkpoint records the objective; resuming it under another one stops at the first step, before any
    update, naming the setting and both values. The same change with load_from (fine-tuning) trains."""
    from posedreamer_mm.apis.checkpoint import CheckpointMismatchError
    from posedreamer_mm.models.editors.base_diffusion import OBJECTIVE_INFO_KEY
    runner(tmp_path, 'first', Toy(), 2).train()
    ckpt = torch.load(tmp_path / 'iter_2.pth', map_location='cpu', weights_only=False)
    assert ckpt['message_hub']['runtime_info'][OBJECTIVE_INFO_KEY] == dict(
        prediction_type='epsilon', caption_dropout=0.0, control_dropout=0.0, num_train_timesteps=10)

    def changed():
        model = Toy(**{k: v for k, v in change.items() if k != 'prediction_type'})
        model.prediction_type = change.get('prediction_type', model.prediction_type)
        return model

    resumed = runner(tmp_path, 'resumed', changed(), 4, resume=True, load_from=str(tmp_path / 'iter_2.pth'))
    with pytest.raises(CheckpointMismatchError, match=rf'another objective \({setting}: checkpoint {saved}, '
                                                      rf'config {config}\)'):
        resumed.train()
    torch.testing.assert_close(resumed.model.head.weight, ckpt['state_dict']['head.weight'])  # no update made
    tuned = runner(tmp_path / 'tuned', 'tuned', changed(), 2, load_from=str(tmp_path / 'iter_2.pth'))
    tuned.train()
    assert (tmp_path / 'tuned' / 'iter_2.pth').exists()


def test_a_resume_with_the_same_objective_continues(tmp_path):
    runner(tmp_path, 'first', Toy(noise_seed=3), 2).train()
    resumed = runner(tmp_path, 'resumed', Toy(noise_seed=3), 4, resume=True, load_from=str(tmp_path / 'iter_2.pth'))
    resumed.train()
    assert resumed.iter == 4 and (tmp_path / 'iter_4.pth').exists()
