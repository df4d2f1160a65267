"""DiffusersExportHook in a real mmengine Runner: when it exports, what (EMA weights), and what it keeps."""
import os

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner

from posedreamer_mm.registry import HOOKS


class Saver(BaseModel):
    """A one-weight model whose save_pretrained writes that weight (as a trainer writes its ControlNet)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(1, 1, bias=False)

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=(self.w(inputs) - 1).pow(2).mean())

    def save_pretrained(self, out_dir):
        os.makedirs(out_dir)
        torch.save(self.w.weight.detach().clone(), os.path.join(out_dir, 'w.pt'))


def _run(tmp_path, hooks, iters=5):
    data = [dict(inputs=torch.ones(1))] * 8
    runner = Runner(model=Saver(), work_dir=str(tmp_path), experiment_name='export',
                    train_dataloader=dict(dataset=data, sampler=dict(type='DefaultSampler', shuffle=False),
                                          batch_size=2, collate_fn=dict(type='default_collate')),
                    train_cfg=dict(by_epoch=False, max_iters=iters),
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)), custom_hooks=hooks,
                    default_hooks=dict(checkpoint=None, logger=None), default_scope='posedreamer_mm')
    runner.train()
    return runner


def _exported(tmp_path):
    root = tmp_path / 'diffusers'
    return sorted(os.listdir(root)), {n: torch.load(root / n / 'w.pt') for n in os.listdir(root)}


def test_exports_every_interval_and_after_training(tmp_path):
    runner = _run(tmp_path, [HOOKS.build(dict(type='DiffusersExportHook', interval=2))])
    names, weights = _exported(tmp_path)
    assert names == ['iter_2', 'iter_4', 'iter_5']  # 5 is the end, not a multiple of 2
    torch.testing.assert_close(weights['iter_5'], runner.model.w.weight.detach())
    assert not torch.equal(weights['iter_2'], weights['iter_4'])  # each is the weight of its own iteration


def test_end_export_not_repeated_and_old_ones_pruned(tmp_path):
    _run(tmp_path, [dict(type='DiffusersExportHook', interval=2, max_keep=2)], iters=6)
    assert _exported(tmp_path)[0] == ['iter_4', 'iter_6']
    with pytest.raises(ValueError, match='max_keep'):
        HOOKS.build(dict(type='DiffusersExportHook', max_keep=0))


def test_with_ema_the_averaged_weights_are_exported(tmp_path):
    runner = _run(tmp_path, [dict(type='EMAHook', momentum=0.5, update_buffers=True),
                             dict(type='DiffusersExportHook', interval=0)])
    names, weights = _exported(tmp_path)
    ema = next(h for h in runner.hooks if type(h).__name__ == 'EMAHook').ema_model.module.w.weight
    assert names == ['iter_5']
    torch.testing.assert_close(weights['iter_5'], ema.detach())
    assert not torch.equal(weights['iter_5'], runner.model.w.weight.detach())
