"""DPO control alignment during training: held-out OKS of the base model and of the current LoRA, the LoRA
exported at every checkpoint, and optionally on-line pair refresh (docs/dpo.md, "`DPOControlHook` and how to read
its figures")."""
from __future__ import annotations

import contextlib
import copy
import os.path as osp
import time

import torch
from mmengine.dist import all_gather_object, get_rank
from mmengine.model import is_model_wrapper
from mmengine.runner.loops import _InfiniteDataloaderIterator

from posedreamer_mm.apis.control_eval import (
    ControlEvalResult,
    control_contact_sheet,
    evaluate_control_sliced,
    preserved_training_state,
)
from posedreamer_mm.apis.dpo_refresh import (
    PAIRS_NAME,
    load_controls,
    refresh_contact_sheet,
    refresh_round,
    refresh_settings,
)
from posedreamer_mm.datasets.dpo_pairs import refreshed_dataset_cfg
from posedreamer_mm.registry import HOOKS
from posedreamer_mm.utils.fileio import file_sha256

from .control_validation_hook import ControlValidationHook
from .diffusers_export_hook import DiffusersExportHook


@HOOKS.register_module()
class DPOControlHook(ControlValidationHook):
    """:class:`ControlValidationHook` for a ``DiffusionDPO`` model: base vs current on one fixed held-out set.

    Before training the hook generates the held-out set (fixed controls, prompts and seeds: the rows of
    ``data_root``, ``apis/control_eval.py``) with the **base model** (the DPO adapter switched off,
    ``model.reference()``; a TR-DPO reference adapter zeroed meanwhile, so a resumed run does not take the moved
    reference for the base) and scores it; every ``interval`` iterations it does the same with the current LoRA and
    logs to ``runner.visualizer``:

    - ``{prefix}mean_oks``, ``{prefix}oks_error``, ``{prefix}frac_unmatched``: the current LoRA's;
    - ``{prefix}base_mean_oks``, ``{prefix}base_oks_error``: the base model's (logged at step 0 and repeated);
    - ``{prefix}oks_error_reduction``: ``(base_error - error) / base_error`` (positive: DPO helps; 0.1 is a
      10 % relative reduction; ``0`` when the base error is 0);
    - ``{prefix}implicit_acc`` and ``{prefix}reward_margin``: the model's last training-batch values
      (``model.last_metrics``), when it has any;
    - ``dpo_val_contact_sheet`` (the prefix's name): per sample, the base image, the current image (same seed), the
      current image with the label skeleton and the controls, captioned ``base OKS -> current OKS``.

    At every checkpoint (``before_save_checkpoint``) the LoRA is written in diffusers format to
    ``work_dir/<lora_dir>/iter_<N>`` (the backends' ``loras=[dict(path=...)]``; rank 0, through a temporary
    folder, with no collective: mmengine calls this hook on rank 0 only).

    **On-line pair refresh** (``refresh=dict(...)``, docs/dpo.md): every ``refresh.interval`` iterations the current
    policy (LoRA on, the live pipeline) generates ``refresh.candidates`` candidates per training control with
    round-specific seeds, the scorer scores them, ``apis/dpo_pairs.py``'s rule pairs them, and the round's
    candidates, scores and pairs file are written to ``work_dir/<refresh.out_dir>/iter_<N>``
    (``apis/dpo_refresh.py``); the training dataloader is then rebuilt on the new pairs (``mode='replace'``) or on
    the original and the new pairs (``'mix'``). A round without a pair keeps the pairs in use. The checkpoint's
    ``meta['dpo_refresh']`` names the pairs in use, so a resumed run trains on the same pairs, at the same position
    in their sampler, as the uninterrupted run.

    Args:
        lora_dir: folder under the work dir for the per-checkpoint LoRA exports (``None``: no export).
        refresh: on-line pair refresh settings (``None``: off): ``interval`` (iterations between rounds),
            ``controls`` (a generated dataset with labels and stored controls: the training controls; a candidates
            dataset gives one control per group), ``num_controls`` (``None``: all), ``candidates`` (per control, 4),
            ``min_gap`` (0.05), ``min_winner`` (0.5), ``no_match`` (``'exclude'``/``'zero'``), ``mode``
            (``'replace'``/``'mix'``), ``out_dir`` (``'dpo_refresh'``), ``seed`` (0), ``controls_per_shard`` (16),
            ``image_format`` (``'png'``), ``sheet_rows`` (4).
        **kwargs: :class:`ControlValidationHook`'s (``data_root``, ``control_types``, ``scorer``,
            ``num_samples``, ``interval``, ``backend``, ``sheet_rows`` ...); ``before_train`` is always on here
            (the base figures are what every later figure is compared with), ``prefix`` defaults to ``'dpo_val/'``.
    """

    def __init__(self, *args, lora_dir: str | None = 'dpo_lora', prefix: str = 'dpo_val/',
                 refresh: dict | None = None, **kwargs) -> None:
        kwargs.pop('before_train', None)
        super().__init__(*args, before_train=True, prefix=prefix, **kwargs)
        self.lora_dir = lora_dir
        self.exporter = None if lora_dir is None else DiffusersExportHook(interval=0, out_dir=lora_dir,
                                                                          after_train=False)
        #: The base model's evaluation (before training), every rank.
        self.base_result: ControlEvalResult | None = None
        self.refresh = None if refresh is None else refresh_settings(refresh)
        self.refresh_controls = None
        #: The refreshed pairs in use (``None``: the configured ones): ``iter``, ``data_root`` (relative to the
        #: work dir), ``ann_file``, ``mode``, ``num_pairs``, ``sha256`` (of the pairs file); saved as the
        #: checkpoint's ``meta['dpo_refresh']``.
        self.refresh_state: dict | None = None
        #: The last round's report (every rank), ``None`` before the first round.
        self.last_refresh: dict | None = None
        self._loaded_refresh: dict | None = None
        self._train_dataloader_cfg: dict | None = None

    def setup(self) -> None:
        super().setup()
        if self.refresh is not None and self.refresh_controls is None:
            self.refresh_controls = load_controls(self.refresh['controls'], self.control_types,
                                                  self.refresh['num_controls'])

    @staticmethod
    def _model(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'reference'):
            raise TypeError(f'DPOControlHook: the model {type(model).__name__} has no reference() context (use it '
                            'with DiffusionDPO; ControlValidationHook validates other diffusion trainers)')
        return model

    def _evaluate(self, model, base: bool) -> ControlEvalResult:
        with preserved_training_state(model):
            if base:
                with _before_dpo(model):
                    pipeline = model.build_pipeline()
                    return self._generate_and_score(pipeline)
            pipeline = model.build_pipeline()
            return self._generate_and_score(pipeline)

    def _generate_and_score(self, pipeline) -> ControlEvalResult:
        return evaluate_control_sliced(pipeline, self.held_out, self.scorer, keep_images=self.sheet_rows,
                                       control_types=self.control_types, backend=self.backend,
                                       batch_size=self.batch_size, keypoint_thr=self.keypoint_thr,
                                       min_keypoints=self.min_keypoints)

    def before_train(self, runner) -> None:
        self.setup()
        model = self._model(runner)
        if self.refresh is not None:
            self._check_train_dataloader(runner)
        # a resume that cannot train on its pairs stops before the base generation, on every rank (a rank whose view
        # of the shared file system lags would otherwise fail alone and leave the others in the base's gather)
        failure = None
        try:
            self._restore_refresh(runner)
        except Exception as err:
            failure = err
        failed = [f'rank {r}: {e}' for r, e in enumerate(all_gather_object(
            None if failure is None else f'{type(failure).__name__}: {failure}')) if e]
        if failure is not None:
            raise failure
        if failed:
            raise RuntimeError("DPOControlHook: restoring the checkpoint's refreshed pairs failed on "
                               + '; '.join(failed))
        self.base_result = self._evaluate(model, base=True)
        runner.visualizer.add_scalars(self._base_scalars(), step=runner.iter)
        runner.logger.info(f'DPO control validation, base model: mean OKS {self.base_result.mean_oks:.4f}, OKS error '
                           f'{self.base_result.oks_error:.4f} ({len(self.base_result.oks)} held-out samples)')

    def _base_scalars(self) -> dict[str, float]:
        return {f'{self.prefix}base_mean_oks': self.base_result.mean_oks,
                f'{self.prefix}base_oks_error': self.base_result.oks_error}

    def validate(self, runner, step: int) -> ControlEvalResult:
        """Generates and scores the held-out set with the current LoRA at ``step`` and logs it against the base."""
        self.setup()
        model = self._model(runner)
        if self.base_result is None:
            self.base_result = self._evaluate(model, base=True)
        result = self._evaluate(model, base=False)
        base_err = self.base_result.oks_error
        scalars = dict(result.scalars(self.prefix), **self._base_scalars())
        scalars[f'{self.prefix}oks_error_reduction'] = (base_err - result.oks_error) / base_err if base_err > 0 else 0.0
        for key in ('implicit_acc', 'reward_margin'):
            if key in getattr(model, 'last_metrics', {}):
                scalars[f'{self.prefix}{key}'] = float(model.last_metrics[key])
        runner.visualizer.add_scalars(scalars, step=step)
        if self.sheet_rows > 0:
            sheet = control_contact_sheet(self.held_out, result.images, result.oks, self.sheet_rows, self.tile,
                                          base_images=self.base_result.images, base_oks=self.base_result.oks)
            runner.visualizer.add_image(f'{self.prefix.rstrip("/").replace("/", "_")}_contact_sheet', sheet,
                                        step=step)
        runner.logger.info(f'DPO control validation at iteration {step}: ' + ', '.join(
            f'{k} {v:.4f}' for k, v in scalars.items()))
        self.last_result = result
        return result

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.exporter is not None:
            step = int(checkpoint.get('meta', {}).get('iter', runner.iter + 1))  # the checkpoint's iteration
            path = self.exporter.export(runner, step, collective=False)  # rank 0 only: no barrier
            checkpoint.setdefault('meta', {})['dpo_lora'] = osp.relpath(path, runner.work_dir)
        if self.refresh_state is not None:
            checkpoint.setdefault('meta', {})['dpo_refresh'] = dict(self.refresh_state)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded_refresh = (checkpoint.get('meta') or {}).get('dpo_refresh')

    # --- on-line pair refresh -------------------------------------------------------------------------------------
    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        super().after_train_iter(runner, batch_idx, data_batch, outputs)
        step = runner.iter + 1
        if self.refresh is not None and step % self.refresh['interval'] == 0 and step < runner.max_iters:
            self.refresh_pairs(runner, step)

    def _check_train_dataloader(self, runner) -> None:
        # The dict the runner built its train dataloader from (runner.cfg is empty when a Runner is built from
        # arguments); each refresh rebuilds the dataloader from it with the new pairs.
        cfg = getattr(runner, '_train_dataloader', None)
        if not isinstance(cfg, dict):
            cfg = runner.cfg.get('train_dataloader')
        if not isinstance(cfg, dict):
            raise TypeError('DPOControlHook: refresh needs the train dataloader as a config dict (it rebuilds the '
                            f'dataloader on each round\'s pairs), got {type(cfg).__name__}')
        refreshed_dataset_cfg(cfg.get('dataset'), '.', mode=self.refresh['mode'])  # a DPOPairDataset config?
        types = list(cfg['dataset'].get('control_types', ('pncc',)))
        types = [types] if isinstance(types, str) else types
        if not set(types) <= set(self.control_types):
            raise ValueError(f'DPOControlHook: the training pairs read controls {types} but the hook generates '
                             f'candidates with {self.control_types} (control_types): a refreshed pairs file would '
                             'miss some')
        self._train_dataloader_cfg = copy.deepcopy(dict(cfg))

    def refresh_pairs(self, runner, step: int) -> dict:
        """One refresh round at ``step`` (every rank): candidates, scores and pairs under ``work_dir``, logged; the
        train dataloader switched to the new pairs when the round made any. Returns the round's report."""
        self.setup()
        if self._train_dataloader_cfg is None:
            self._check_train_dataloader(runner)
        s = self.refresh
        model = self._model(runner)
        root = osp.join(runner.work_dir, s['out_dir'], f'iter_{step}')
        start = time.perf_counter()
        with preserved_training_state(model):
            pipeline = model.build_pipeline()
            report = refresh_round(pipeline, self.refresh_controls, self.scorer, root, step, s,
                                   control_types=self.control_types, backend=self.backend,
                                   batch_size=self.batch_size, keypoint_thr=self.keypoint_thr,
                                   min_keypoints=self.min_keypoints)
            del pipeline
        self.last_refresh = report
        # what follows the round can fail on one rank only (the sheet is rank 0's; a rank whose view of the round's
        # folder lags fails its dataloader rebuild): gathered, so that every rank raises instead of training on
        failure = None
        try:
            self._log_round(runner, step, report, root, time.perf_counter() - start)
            if report['num_pairs'] > 0:
                self.refresh_state = dict(iter=int(step), data_root=osp.relpath(root, runner.work_dir),
                                          ann_file=PAIRS_NAME, mode=self.refresh['mode'],
                                          num_pairs=int(report['num_pairs']),
                                          sha256=report['refresh']['pairs_sha256'])
                self._install(runner, skip=0)
            else:
                using = 'the configured pairs' if self.refresh_state is None else \
                    f'the pairs of {self.refresh_state["data_root"]}'
                runner.logger.warning(f'DPO pair refresh at iteration {step} made no pair (groups by reason '
                                      f'{report["groups_by_reason"]}): training keeps {using}')
        except Exception as err:
            failure = err
        errors = [f'rank {r}: {e}' for r, e in enumerate(all_gather_object(
            None if failure is None else f'{type(failure).__name__}: {failure}')) if e]
        if errors:
            raise RuntimeError("DPO pair refresh failed (switching the train dataloader to the round's pairs) on "
                               + '; '.join(errors)) from failure
        return report

    def _log_round(self, runner, step: int, report: dict, root: str, seconds: float) -> None:
        r, prefix = report['refresh'], 'dpo_refresh/'
        scalars = {f'{prefix}num_pairs': report['num_pairs'], f'{prefix}num_groups': report['num_groups'],
                   f'{prefix}mean_oks': r['mean_oks'], f'{prefix}num_unmatched': r['num_unmatched'],
                   f'{prefix}num_unscored': sum(report['unscored_by_cause'].values())}
        scalars.update({f'{prefix}{k}': v for k, v in report['groups_by_reason'].items() if k != 'paired'})
        if report['gap'].get('n'):
            scalars[f'{prefix}mean_gap'] = report['gap']['mean']
        runner.visualizer.add_scalars(scalars, step=step)
        sheet_rows = self.refresh['sheet_rows']
        if sheet_rows > 0 and get_rank() == 0:
            sheet = refresh_contact_sheet(root, self.refresh, sheet_rows, self.tile)
            if sheet is not None:
                runner.visualizer.add_image('dpo_refresh_contact_sheet', sheet, step=step)
        runner.logger.info(
            f'DPO pair refresh at iteration {step}: {report["num_pairs"]} pairs of {report["num_groups"]} controls '
            f'x {r["candidates_per_control"]} candidates (groups by reason {report["groups_by_reason"]}, unscored '
            f'{report["unscored_by_cause"]}), mean OKS {r["mean_oks"]:.4f}, {r["num_unmatched"]} candidates '
            f'without a matched person, {seconds:.1f} s -> {root}')

    def _install(self, runner, skip: int) -> None:
        """Rebuilds the train dataloader on :attr:`refresh_state`'s pairs (a new dataset, sampler and workers, so
        the sampler sees the new length and no worker keeps the old dataset) and points the loop at it.

        ``skip``: how many of the loop's next calls return nothing without reading data. A resumed
        ``IterBasedTrainLoop`` advances its iterator by the resumed iteration; the refreshed dataloader of the
        uninterrupted run started at iteration ``skip``, so only the calls after those are real.
        """
        state, loop = self.refresh_state, runner.train_loop
        cfg = copy.deepcopy(self._train_dataloader_cfg)
        cfg['dataset'] = refreshed_dataset_cfg(cfg['dataset'], osp.join(runner.work_dir, state['data_root']),
                                               state['ann_file'], self.refresh['mode'])
        randomness = getattr(runner, '_randomness_cfg', None) or {}
        loader = runner.build_dataloader(cfg, seed=runner.seed, diff_rank_seed=randomness.get('diff_rank_seed', False))
        _stop_workers(getattr(loop, 'dataloader_iterator', None))
        loop.dataloader = loader
        loop.dataloader_iterator = _SkippingIterator(loader, skip)
        runner.logger.info(f'DPO pair refresh: training on {len(loader.dataset)} pairs ({self.refresh["mode"]}: '
                           f'{state["data_root"]}/{state["ann_file"]}) from iteration {state["iter"]}')

    def _restore_refresh(self, runner) -> None:
        state, self._loaded_refresh = self._loaded_refresh, None
        if not state:
            return
        if self.refresh is None:
            runner.logger.warning(f'DPOControlHook: the checkpoint was trained on refreshed pairs ({state}); this '
                                  'run has no refresh and trains on the configured pairs')
            return
        if runner.iter < int(state['iter']):  # load_from without resume: training starts over on the configured pairs
            runner.logger.warning(f'DPOControlHook: the loaded checkpoint trained on refreshed pairs from iteration '
                                  f'{state["iter"]}; this run starts at iteration {runner.iter} on the configured '
                                  'pairs')
            return
        if state.get('mode', self.refresh['mode']) != self.refresh['mode']:
            raise ValueError(f'DPOControlHook: the resumed checkpoint trained on refreshed pairs with refresh.mode '
                             f'{state["mode"]!r}, this config says {self.refresh["mode"]!r}: a resumed run would train '
                             'on other data; resume with the same mode (or start a new run with load_from)')
        path = osp.join(runner.work_dir, state['data_root'], state['ann_file'])
        if not osp.isfile(path):
            raise FileNotFoundError(f'DPOControlHook: the resumed checkpoint trained on the pairs file {path} '
                                    "(meta['dpo_refresh']), which does not exist: resume in the run's work dir, or "
                                    'copy its refresh folder along')
        if state.get('sha256') is not None and file_sha256(path) != state['sha256']:
            # the round's folder was rewritten after the checkpoint: a second run into this work dir (not a resume)
            # or a round redone from another checkpoint; its pairs are not the ones this checkpoint trained on
            raise ValueError(f'DPOControlHook: the pairs file {path} is not the one the checkpoint trained on (sha256 '
                             f"{file_sha256(path)}, checkpoint's {state['sha256']}, meta['dpo_refresh']): the round "
                             'was rewritten after this checkpoint (a second run in this work dir, or the round redone '
                             'from an earlier checkpoint); resume from the latest checkpoint of the run that wrote it, '
                             'or start a new run with load_from')
        self.refresh_state = dict(state)
        self._install(runner, skip=int(state['iter']))


@contextlib.contextmanager
def _before_dpo(model):
    """Inside, ``model`` is the network before DPO: ``model.reference()``, with a TR-DPO reference adapter
    (``reference_adapter=True``, moved by ``TRDPOHook``) zeroed meanwhile (its ``lora_B``: the adapter then adds
    exactly nothing, as a fresh one). Otherwise a resumed TR-DPO run would take the moved reference for the base."""
    saved = []
    if getattr(model, 'ref_adapter_name', None) is not None:
        saved = [(m.weight, m.weight.detach().clone()) for k, m in model.ref_layers.items() if k.endswith('lora_B')]
    try:
        with torch.no_grad():
            for weight, _ in saved:
                weight.zero_()
        with model.reference():
            yield model
    finally:
        with torch.no_grad():
            for weight, value in saved:
                weight.copy_(value)


class _SkippingIterator(_InfiniteDataloaderIterator):
    """mmengine's infinite dataloader iterator whose first ``skip`` next calls return ``None`` without reading."""

    def __init__(self, dataloader, skip: int = 0) -> None:
        super().__init__(dataloader)
        self.skip = int(skip)

    def __next__(self):
        if self.skip > 0:
            self.skip -= 1
            return None
        return super().__next__()


def _stop_workers(iterator) -> None:
    """Shuts down the worker processes of a replaced dataloader iterator (``persistent_workers=True`` keeps them,
    with their copy of the old dataset, alive otherwise until garbage collection)."""
    inner = getattr(iterator, '_iterator', None)
    if hasattr(inner, '_shutdown_workers'):
        inner._shutdown_workers()


__all__ = ['DPOControlHook']
