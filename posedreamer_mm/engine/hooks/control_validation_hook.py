"""Control validation during control-model training: held-out OKS and a contact sheet every N iterations."""
from __future__ import annotations

import os
from collections.abc import Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from posedreamer_mm.apis.control_eval import (
    ControlEvalResult,
    HeldOutSample,
    control_contact_sheet,
    evaluate_control_sliced,
    load_held_out,
    preserved_training_state,
)
from posedreamer_mm.registry import HOOKS, SCORERS


@HOOKS.register_module()
class ControlValidationHook(Hook):
    """Generates a fixed held-out set with the current weights and logs how well the images follow their labels.

    Every ``interval`` training iterations (and before training with ``before_train=True``) the hook asks the
    training model for its live pipeline (``model.build_pipeline()``, ``docs/control_training.md``), generates the
    held-out set, scores each image with ``scorer`` and logs through ``runner.visualizer`` (so every configured
    backend, local ``vis_data/scalars.json``, TensorBoard or W&B, receives them):

    - ``add_scalars``: ``{prefix}mean_oks``, ``{prefix}oks_error`` (``1 - mean_oks``) and ``{prefix}frac_unmatched``
      at ``step`` = the iteration count (0 before training). An image without a matched person counts as OKS 0.
    - ``add_image``: ``control_val_contact_sheet`` (the prefix with ``/`` as ``_``, since the local backend writes
      ``vis_data/vis_image/<name>_<step>.png``), per sample (the first ``sheet_rows``) the generated image, the
      image with the label's COCO-17 skeleton, and the control(s) (``apis/control_eval.py``).

    The held-out set is ``num_samples`` rows of the generated dataset ``data_root`` (evenly spaced, the same rows,
    prompts and seeds at every evaluation; ``apis/control_eval.py``'s ``load_held_out``). Validation runs in eval
    mode without gradients and restores every module's train/eval flag and the Python, numpy, torch and CUDA
    random states, so training continues exactly as without the hook.

    **Distributed**: every rank generates a slice of the held-out set (rank ``r`` of ``W``: samples ``r, r + W,
    ...``); the scores are gathered, so all ranks compute the same figures and only rank 0's visualizer writes. A
    failure on one rank is gathered and raised on every rank (none waits in a collective).

    Args:
        data_root: a generated dataset with labels and stored controls (``docs/dataset_format.md``).
        control_types: the controls the model reads, in its order (e.g. ``['pncc']``).
        scorer: a scorer config (``SCORERS``, e.g. ``dict(type='MediaPipeScorer')``) or a built scorer.
        num_samples: held-out size.
        interval: validate every this many iterations (``<= 0``: never during training).
        before_train: also validate before the first iteration (the base model's figures).
        after_train: also validate after the last iteration when it was not a multiple of ``interval`` (so the
            final weights are always measured).
        size: evaluation size ``(W, H)`` or one side (controls resized to it, labels moved with them); ``None``
            uses the stored controls' size.
        control_interpolation: how controls are resized (``'nearest'``, as control training does, or
            ``'linear'``).
        backend: generation backend settings (``num_inference_steps``, ``guidance_scale``, ``call_kwargs``, or
            ``type`` to name the backend class; default: the backend of the pipeline's class).
        batch_size: samples per pipeline call.
        keypoint_thr, min_keypoints: label matching (``scoring/matching.py``).
        sheet_rows: samples shown in the contact sheet (``0``: no sheet).
        tile: contact-sheet tile side, pixels.
        prefix: name prefix of the logged scalars and image.
    """

    priority = 'LOW'

    def __init__(self, data_root: str | os.PathLike, control_types: Sequence[str], scorer: dict | object,
                 num_samples: int = 16, interval: int = 1000, before_train: bool = False, after_train: bool = True,
                 size: int | Sequence[int] | None = None, control_interpolation: str = 'nearest',
                 backend: dict | None = None, batch_size: int = 1,
                 keypoint_thr: float = 0.3, min_keypoints: int = 4, sheet_rows: int = 8, tile: int = 128,
                 prefix: str = 'control_val/') -> None:
        if isinstance(control_types, str) or not control_types:
            raise ValueError(f'ControlValidationHook: control_types must be a non-empty list, got {control_types!r}')
        if int(num_samples) < 1:
            raise ValueError(f'ControlValidationHook: num_samples must be >= 1, got {num_samples}')
        self.data_root = os.fspath(data_root)
        self.control_types = [str(c) for c in control_types]
        self.scorer_cfg = scorer
        self.num_samples, self.interval = int(num_samples), int(interval)
        self.validate_before_train, self.validate_after_train = bool(before_train), bool(after_train)
        self.size = None if size is None else (int(size), int(size)) if isinstance(size, int) \
            else tuple(int(s) for s in size)
        self.control_interpolation = str(control_interpolation)
        self.backend = dict(backend or {})
        self.batch_size, self.keypoint_thr, self.min_keypoints = int(batch_size), float(keypoint_thr), \
            int(min_keypoints)
        self.sheet_rows, self.tile, self.prefix = int(sheet_rows), int(tile), str(prefix)
        self.held_out: list[HeldOutSample] | None = None
        self.scorer = None
        #: The last evaluation (every rank), for tests and for hooks that build on this one.
        self.last_result: ControlEvalResult | None = None

    def setup(self) -> None:
        """Reads the held-out set and builds the scorer (once; before training, so a bad path fails early)."""
        if self.held_out is None:
            self.held_out = load_held_out(self.data_root, self.num_samples, self.control_types, self.size,
                                          self.control_interpolation)
        if self.scorer is None:
            self.scorer = SCORERS.build(self.scorer_cfg) if isinstance(self.scorer_cfg, dict) else self.scorer_cfg

    def before_train(self, runner) -> None:
        self.setup()
        if self.validate_before_train:
            self.validate(runner, step=runner.iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.interval > 0 and self.every_n_train_iters(runner, self.interval):
            self.validate(runner, step=runner.iter + 1)

    def after_train(self, runner) -> None:
        if self.validate_after_train and (self.interval <= 0 or runner.iter % self.interval != 0):
            self.validate(runner, step=runner.iter)

    def validate(self, runner, step: int) -> ControlEvalResult:
        """Generates, scores and logs the held-out set at ``step``; returns the (gathered) result."""
        self.setup()
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        with preserved_training_state(model):
            pipeline = model.build_pipeline()
            result = evaluate_control_sliced(pipeline, self.held_out, self.scorer, keep_images=self.sheet_rows,
                                             control_types=self.control_types, backend=self.backend,
                                             batch_size=self.batch_size, keypoint_thr=self.keypoint_thr,
                                             min_keypoints=self.min_keypoints)
            del pipeline
        scalars = result.scalars(self.prefix)
        runner.visualizer.add_scalars(scalars, step=step)
        if self.sheet_rows > 0:
            sheet = control_contact_sheet(self.held_out, result.images, result.oks, self.sheet_rows, self.tile)
            runner.visualizer.add_image(f'{self.prefix.rstrip("/").replace("/", "_")}_contact_sheet', sheet,
                                        step=step)
        runner.logger.info(f'control validation at iteration {step}: ' + ', '.join(
            f'{k} {v:.4f}' for k, v in scalars.items()) + f' ({len(result.oks)} held-out samples, '
            f'{result.num_unmatched} without a matched person)')
        self.last_result = result
        return result
