"""DifficultyHook (posedreamer_mm/engine/hooks/difficulty_hook.py) and the HMR model's per-sample error it reads."""
import json
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.dataset import BaseDataset, DefaultSampler
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmengine.runner import EpochBasedTrainLoop, Runner
from mmpose.structures import PoseDataSample

from posedreamer_mm.datasets.samplers.hard_sample_sampler import HardSampleSampler
from posedreamer_mm.engine.hooks.difficulty_hook import CHECKPOINT_KEY, DifficultyHook, table_digest
from posedreamer_mm.models.estimators.hmr_estimator import HMREstimator
from posedreamer_mm.registry import HOOKS


class Leaf(list):
    dataset_name = 'gen'


class ReportingModel:
    """Stands in for HMREstimator after ``loss``: the per-sample errors of the batch it was given."""
    record_sample_errors = False
    sample_errors = None


def _runner(tmp_path, sampler, loop=None):
    return SimpleNamespace(train_dataloader=SimpleNamespace(sampler=sampler, batch_size=2), model=ReportingModel(),
                           iter=0, epoch=0, work_dir=str(tmp_path), train_loop=loop or SimpleNamespace(), _resume=True)


def _step(hook, runner, idx, errors):
    runner.model.sample_errors = dict(dataset_name=['gen'] * len(idx), sample_idx=np.array(idx),
                                      error_mm=np.array(errors, float))
    hook.after_train_iter(runner, batch_idx=runner.iter)
    runner.iter += 1


def test_per_sample_error_is_the_pelvis_aligned_body_mpjpe_in_mm():
    rng = np.random.default_rng(0)
    gt = torch.tensor(rng.normal(size=(4, 25, 3)), dtype=torch.float32)
    pred = gt.clone()
    pred[0] += torch.tensor([0.5, -0.2, 3.0])           # a global shift: 0 after aligning the pelvis
    pred[1, 5] += torch.tensor([0.03, 0.04, 0.0])        # one of the 22 body joints 50 mm off
    pred[2, 0] += torch.tensor([0.0, 0.0, 0.022])        # the pelvis 22 mm off: the 21 others 22 mm relative to it
    pred[3, 23] += 1.0                                    # not a body joint (index >= 22): not counted
    samples = [PoseDataSample(metainfo=dict(dataset_name='bedlam', sample_idx=i)) for i in range(3)]
    samples.append(PoseDataSample(metainfo=dict(dataset_name='coco')))
    out = HMREstimator.per_sample_error(dict(joints_3d=pred), dict(joints_3d=gt, has_joints_3d=torch.tensor(
        [1.0, 1.0, 1.0, 1.0])), samples)
    np.testing.assert_allclose(out['error_mm'], [0.0, 50 / 22, 21.0, 0.0], atol=1e-3)
    assert out['dataset_name'] == ['bedlam', 'bedlam', 'bedlam', 'coco']
    assert out['sample_idx'].tolist() == [0, 1, 2, -1]
    out = HMREstimator.per_sample_error(dict(joints_3d=pred), dict(joints_3d=gt, has_joints_3d=torch.tensor(
        [1.0, 0.0, 1.0, 0.0])), samples)
    assert np.isnan(out['error_mm'][[1, 3]]).all() and out['error_mm'][2] == pytest.approx(21.0, abs=1e-3)
    out = HMREstimator.per_sample_error(dict(joints_3d=pred), dict(has_joints_3d=torch.zeros(4)), samples)
    assert np.isnan(out['error_mm']).all()  # no sample of the batch has 3D joints


def test_updates_the_sampler_by_ema_every_interval_and_logs_the_table(tmp_path):
    sampler = HardSampleSampler(Leaf(range(4)), seed=0, batch_size=2)
    with DefaultScope.overwrite_default_scope('posedreamer_mm'):
        hook = HOOKS.build(dict(type='DifficultyHook', interval=2, momentum=0.25))
    runner = _runner(tmp_path, sampler)
    hook.before_train(runner)
    assert runner.model.record_sample_errors
    _step(hook, runner, [0, 1], [10.0, 20.0])
    assert np.isnan(sampler.difficulty).all()  # not before the interval
    _step(hook, runner, [0, 2], [30.0, np.nan])
    np.testing.assert_array_equal(sampler.difficulty, [20.0, 20.0, np.nan, np.nan])  # first visit: the mean
    _step(hook, runner, [1, 3], [40.0, 8.0])
    _step(hook, runner, [1, 1], [0.0, 80.0])
    # EMA with momentum 0.25 of the mean of the interval's errors: sample 1 -> 0.75 * 20 + 0.25 * 40
    np.testing.assert_array_equal(sampler.difficulty, [20.0, 25.0, np.nan, 8.0])
    assert sampler.consumed == 8
    lines = [json.loads(x) for x in (tmp_path / 'difficulty' / 'rank0.jsonl').read_text().splitlines()]
    assert [r['iter'] for r in lines] == [2, 4] and [r['measured'] for r in lines] == [2, 3]
    assert lines[-1]['sha1'] == table_digest(sampler.difficulty)


def test_checkpoint_round_trip_restores_table_draws_and_pending(tmp_path):
    sampler = HardSampleSampler(Leaf(range(6)), seed=3, infinite=True, batch_size=2,
                                curriculum=dict(by='iter', begin=0, end=2))
    hook = DifficultyHook(interval=3)
    runner = _runner(tmp_path, sampler)
    hook.before_train(runner)
    it = iter(sampler)
    for k in range(4):
        [next(it) for _ in range(2)]
        _step(hook, runner, [k % 6, (k + 3) % 6], [float(k), 2.0 * k])
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    path = tmp_path / 'ckpt.pth'
    torch.save(checkpoint, path)
    loaded = torch.load(path, weights_only=True)  # mmengine may load with weights_only: tensors, not numpy

    other = HardSampleSampler(Leaf(range(6)), seed=99, infinite=True, batch_size=2,
                              curriculum=dict(by='iter', begin=0, end=2))
    new_hook = DifficultyHook(interval=3)
    new_runner = _runner(tmp_path / 'b', other)
    new_runner._resume = False
    new_hook.after_load_checkpoint(new_runner, loaded)  # load_from (not resume): the curriculum starts afresh
    assert other.seed == 99 and np.isnan(other.difficulty).all()
    new_runner._resume = True
    new_hook.after_load_checkpoint(new_runner, loaded)
    assert other.seed == 3
    np.testing.assert_array_equal(other.difficulty, sampler.difficulty)
    for a, b in zip(new_hook.pending(), hook.pending()):  # the observation of iteration 4, not yet folded in
        np.testing.assert_array_equal(a, b)
    assert len(hook.pending()[0]) == 2
    assert set(other._chunks) == set(sampler._chunks)
    for k, v in sampler._chunks.items():
        np.testing.assert_array_equal(other._chunks[k], v)
    assert CHECKPOINT_KEY in checkpoint


def test_bad_set_ups_fail_with_one_clear_error(tmp_path):
    sampler = HardSampleSampler(Leaf(range(4)), seed=0)
    with pytest.raises(TypeError, match='HardSampleSampler.*got DefaultSampler'):
        DifficultyHook(interval=1).before_train(_runner(tmp_path, DefaultSampler(list(range(4)), seed=0)))
    with pytest.raises(ValueError, match='iteration-based loop needs interval'):
        DifficultyHook().before_train(_runner(tmp_path, sampler))
    epoch_loop = EpochBasedTrainLoop.__new__(EpochBasedTrainLoop)
    DifficultyHook().before_train(_runner(tmp_path, sampler, loop=epoch_loop))  # per-epoch updates: fine
    runner = _runner(tmp_path, sampler)
    runner.model = object()
    with pytest.raises(TypeError, match='does not report per-sample errors'):
        DifficultyHook(interval=1).before_train(runner)
    runner = _runner(tmp_path, sampler)
    hook = DifficultyHook(interval=1)
    with pytest.raises(ValueError, match="no 'sample_idx' metainfo"):
        _step(hook, runner, [-1, 0], [1.0, 2.0])
    with pytest.raises(ValueError, match='momentum'):
        DifficultyHook(momentum=0.0)


class ToyDataset(BaseDataset):
    """Sample ``i`` is the number ``i``; the toy model's error on it is ``|i - w|``."""
    dataset_name = 'toy'

    def __init__(self, n: int):
        self.n = n
        super().__init__(serialize_data=False)

    def load_data_list(self):
        return [dict(value=float(i)) for i in range(self.n)]

    def prepare_data(self, idx):
        return dict(inputs=torch.tensor(self.get_data_info(idx)['value']), data_samples=dict(sample_idx=idx))


class ToyModel(BaseModel):
    """Reports ``|value - w|`` per sample as HMREstimator reports its MPJPE; records what it trained on."""
    record_sample_errors = False

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.trained: list[int] = []

    def forward(self, inputs, data_samples=None, mode='tensor'):
        err = (torch.stack(inputs) - self.w).abs()
        idx = [int(i) for i in data_samples['sample_idx']]  # pseudo_collate: a dict of lists
        self.trained += idx
        if self.record_sample_errors:
            self.sample_errors = dict(dataset_name=['toy'] * len(idx), sample_idx=np.array(idx),
                                      error_mm=err.detach().double().numpy())
        return dict(loss=err.mean())


def _toy_runner(work_dir, max_epochs, resume=False, seed=3):
    return Runner(model=ToyModel(), work_dir=str(work_dir), default_scope='posedreamer_mm',
                  experiment_name=f'difficulty_{uuid.uuid4().hex}',
                  train_dataloader=dict(dataset=ToyDataset(6), batch_size=2, num_workers=0,
                                        collate_fn=dict(type='pseudo_collate'),
                                        sampler=dict(type='HardSampleSampler',
                                                     curriculum=dict(by='epoch', begin=0, end=1, max_mix=1.0))),
                  optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
                  train_cfg=dict(by_epoch=True, max_epochs=max_epochs), randomness=dict(seed=seed),
                  custom_hooks=[dict(type='DifficultyHook', momentum=1.0)],
                  default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)), resume=resume)


def test_epoch_loop_draws_each_epoch_from_the_last_epochs_errors_and_resumes(tmp_path):
    """A real Runner with an EpochBasedTrainLoop: epoch 0 is DefaultSampler's, the hook folds the epoch's errors
    in at its end, epoch 1 draws with p_i = i / 15 (max_mix 1, error = i as lr is 0) from numpy's generator seeded
    with seed + 1; a run resumed from the epoch-2 checkpoint draws epoch 2 as the uninterrupted run did."""
    runner = _toy_runner(tmp_path / 'full', 3)
    runner.train()
    trained = runner.model.trained
    assert trained[:6] == list(DefaultSampler(list(range(6)), seed=3))
    np.testing.assert_array_equal(runner.train_dataloader.sampler.difficulty, np.arange(6.0))
    expected = np.random.default_rng(3 + 1).choice(6, 6, p=np.arange(6) / 15)
    assert trained[6:12] == expected.tolist()
    import shutil
    shutil.copytree(tmp_path / 'full', tmp_path / 'cut')
    (tmp_path / 'cut' / 'epoch_3.pth').unlink()
    (tmp_path / 'cut' / 'last_checkpoint').write_text(str(tmp_path / 'cut' / 'epoch_2.pth'))
    resumed = _toy_runner(tmp_path / 'cut', 3, resume=True, seed=99)  # the sampler's seed comes from the state
    resumed.train()
    assert resumed.model.trained == trained[12:]  # epoch 2 only, drawn as before
