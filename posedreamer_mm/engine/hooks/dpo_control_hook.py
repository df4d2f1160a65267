"""DPO control alignment during training: held-out OKS of the base model and of the current LoRA, and the LoRA
exported at every checkpoint (docs/dpo.md, "Reading the hook's figures")."""
from __future__ import annotations

import os.path as osp

from mmengine.model import is_model_wrapper

from posedreamer_mm.apis.control_eval import (
    ControlEvalResult,
    control_contact_sheet,
    evaluate_control_sliced,
    preserved_training_state,
)
from posedreamer_mm.registry import HOOKS

from .control_validation_hook import ControlValidationHook
from .diffusers_export_hook import DiffusersExportHook


@HOOKS.register_module()
class DPOControlHook(ControlValidationHook):
    """:class:`ControlValidationHook` for a ``DiffusionDPO`` model: base vs current on one fixed held-out set.

    Before training the hook generates the held-out set (fixed controls, prompts and seeds: the rows of
    ``data_root``, ``apis/control_eval.py``) with the **base model** (the DPO adapter switched off,
    ``model.reference()``) and scores it; every ``interval`` iterations it does the same with the current LoRA and
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
    ``work_dir/<lora_dir>/iter_<N>`` (the backends' ``loras=[dict(path=...)]``; ``DiffusersExportHook``'s
    writer: rank 0, through a temporary folder). Pairs are not refreshed on-line (docs/dpo.md says why).

    Args:
        lora_dir: folder under the work dir for the per-checkpoint LoRA exports (``None``: no export).
        **kwargs: :class:`ControlValidationHook`'s (``data_root``, ``control_types``, ``scorer``,
            ``num_samples``, ``interval``, ``backend``, ``sheet_rows`` ...); ``before_train`` is always on here
            (the base figures are what every later figure is compared with), ``prefix`` defaults to ``'dpo_val/'``.
    """

    def __init__(self, *args, lora_dir: str | None = 'dpo_lora', prefix: str = 'dpo_val/', **kwargs) -> None:
        kwargs.pop('before_train', None)
        super().__init__(*args, before_train=True, prefix=prefix, **kwargs)
        self.lora_dir = lora_dir
        self.exporter = None if lora_dir is None else DiffusersExportHook(interval=0, out_dir=lora_dir,
                                                                          after_train=False)
        #: The base model's evaluation (before training), every rank.
        self.base_result: ControlEvalResult | None = None

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
                with model.reference():
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
            path = self.exporter.export(runner, step)
            checkpoint.setdefault('meta', {})['dpo_lora'] = osp.relpath(path, runner.work_dir)


__all__ = ['DPOControlHook']
