"""Every N iterations and after training, the trained diffusion weights in the layout the generation backends load."""
from __future__ import annotations

import os
import os.path as osp
import shutil

from mmengine.dist import barrier, is_main_process
from mmengine.hooks import EMAHook, Hook
from mmengine.model import is_model_wrapper

from posedreamer_mm.registry import HOOKS
from posedreamer_mm.utils.fileio import TMP_MARKER


@HOOKS.register_module()
class DiffusersExportHook(Hook):
    """Calls ``model.save_pretrained(work_dir/<out_dir>/iter_<N>)`` every ``interval`` iterations and at the end.

    The model is a diffusion trainer (``models/editors/``): a ControlNet trainer writes a ``ControlNetModel``
    folder, a LoRA trainer its LoRA file, which ``configs/generation/backends/`` configs load directly
    (docs/control_training.md). With mmengine's ``EMAHook`` in the run the exported weights are the EMA ones (as
    the checkpoints' ``state_dict`` are: ``EMAHook`` swaps them in).

    Rank 0 writes each folder under a temporary name and renames it when complete (a kill mid-write leaves no
    half folder under the final name; a resumed run that reaches the same iteration replaces it); the other ranks
    wait at a barrier.

    Args:
        interval: export every ``interval`` training iterations (``<= 0``: only at the end).
        out_dir: folder under the work dir.
        after_train: export once more after the last iteration (unless that iteration was just exported).
        max_keep: keep only the newest ``max_keep`` exports (``None``: all).
    """

    priority = 'LOW'  # after EMAHook (NORMAL) has updated the averages, before CheckpointHook (VERY_LOW)

    def __init__(self, interval: int = 1000, out_dir: str = 'diffusers', after_train: bool = True,
                 max_keep: int | None = None) -> None:
        self.interval = int(interval)
        self.out_dir = str(out_dir)
        self.export_after_train = bool(after_train)
        if max_keep is not None and int(max_keep) < 1:
            raise ValueError(f'DiffusersExportHook: max_keep must be >= 1 or None, got {max_keep}')
        self.max_keep = None if max_keep is None else int(max_keep)
        self.last_exported: int | None = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.interval > 0 and self.every_n_train_iters(runner, self.interval):
            self.export(runner, runner.iter + 1)

    def after_train(self, runner) -> None:
        if self.export_after_train and self.last_exported != runner.iter:
            self.export(runner, runner.iter)

    def _source(self, runner):
        """The model whose weights are exported: the EMA copy where an ``EMAHook`` keeps one."""
        for hook in runner.hooks:
            ema = getattr(hook, 'ema_model', None)
            if isinstance(hook, EMAHook) and ema is not None:
                return ema.module
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def export(self, runner, step: int, collective: bool = True) -> str:
        """Writes ``work_dir/<out_dir>/iter_<step>`` (rank 0) and returns its path.

        ``collective=False`` for a caller that runs on rank 0 only (a ``before_save_checkpoint`` hook: mmengine's
        ``Runner.save_checkpoint`` is ``master_only``): no barrier, which there would pair with the other ranks'
        next collective and leave every rank waiting.
        """
        root = osp.join(runner.work_dir, self.out_dir)
        final = osp.join(root, f'iter_{step}')
        model = self._source(runner)
        if not hasattr(model, 'save_pretrained'):
            raise TypeError(f'DiffusersExportHook: {type(model).__name__} has no save_pretrained(out_dir) (use it '
                            'with a diffusion trainer of models/editors/)')
        if is_main_process():
            os.makedirs(root, exist_ok=True)
            tmp = osp.join(root, f'.iter_{step}{TMP_MARKER}export')
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)
            if osp.isdir(final):
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._prune(root)
            runner.logger.info(f'DiffusersExportHook: iteration {step} weights written to {final}')
        if collective:
            barrier()
        self.last_exported = step
        return final

    def _prune(self, root: str) -> None:
        if self.max_keep is None:
            return
        steps = sorted(int(name[len('iter_'):]) for name in os.listdir(root)
                       if name.startswith('iter_') and name[len('iter_'):].isdigit())
        for old in steps[:-self.max_keep]:
            shutil.rmtree(osp.join(root, f'iter_{old}'), ignore_errors=True)


__all__ = ['DiffusersExportHook']
