"""Generate a fixed held-out set with a control model and score how well each image follows its label (OKS).

The one generate-and-score step of the control-validation hook (``engine/hooks/control_validation_hook.py``) and
of DPO's before/after comparison (issue 18)::

    held_out = load_held_out('data/val_pncc', num_samples=16, control_types=['pncc'])
    result = evaluate_control(model.build_pipeline(), held_out, SCORERS.build(dict(type='MediaPipeScorer')))
    result.mean_oks, result.oks_error, result.oks          # floats and the (N,) per-image OKS
    sheet = control_contact_sheet(held_out, result.images, result.oks)   # image | image + skeleton | control(s)

**The held-out set** is read from a generated dataset with labels (``generation/reader.py``'s
:class:`~posedreamer_mm.generation.reader.GeneratedDataReader`): ``num_samples`` rows evenly spaced over the
dataset (:func:`select_indices`, deterministic), each with its stored control images, prompt, negative prompt,
seed and the label's projected COCO-17 keypoints. The same rows, seeds and prompts are used at every evaluation,
so two evaluations differ only by the weights.

**Generation** goes through a generation backend (``generation/backends/``): either a configured backend, or the
live pipeline a training model builds, wrapped by :func:`pipeline_backend` in the registered backend whose
``pipeline_class`` is the pipeline's class (its per-sample seeded generators, size checks and control arguments
are the ones dataset generation uses, so a validation image equals the image ``tools/generate.py`` would make
from the same weights, control, prompt and seed).

**Scoring** runs the configured scorer (``SCORERS``) on each image and matches the label to the detections with
:func:`~posedreamer_mm.scoring.matching.match_label` (the project's OKS convention, ``docs/scoring.md``). An image
where no person is matched (nothing detected, or no detection with enough confident keypoints) counts as
**OKS 0** (OKS error 1) and is counted in ``num_unmatched``: a model that stops drawing people must not look better
by dropping those images from the mean. :func:`~posedreamer_mm.evaluation.functional.oks.control_accuracy` gives
the means.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import random
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.evaluation.functional.oks import control_accuracy
from posedreamer_mm.scoring.base import BasePoseScorer, check_rgb_image
from posedreamer_mm.scoring.matching import LabelMatch, match_label
from posedreamer_mm.visualization.contact_sheet import tile_sheet
from posedreamer_mm.visualization.draw import draw_coco17

#: Placeholder weights path of a backend that wraps a live pipeline (never loaded: the pipeline is set).
LIVE_PIPELINE = '<live pipeline>'


@dataclasses.dataclass
class HeldOutSample:
    """One fixed validation input.

    Attributes:
        sample_id: the dataset row's id.
        controls: ``{control_type: (H, W, 3) uint8 RGB}`` at the evaluation size.
        prompt: the row's prompt.
        negative_prompt: the row's negative prompt.
        seed: the row's generation seed (one generator per image, :func:`~.generation.backends.base.sample_generators`).
        keypoints: ``(17, 3)`` the label's COCO-17 keypoints in pixels of the evaluation size (x, y, visibility).
        sample: the row's label (crop camera of the stored image, not rescaled).
    """

    sample_id: str
    controls: dict[str, np.ndarray]
    prompt: str
    negative_prompt: str
    seed: int
    keypoints: np.ndarray
    sample: BodySample

    def results(self) -> dict[str, Any]:
        """The generator's results dict a backend reads (``generation/backends/base.py``)."""
        return dict(controls=self.controls, prompt=self.prompt, negative_prompt=self.negative_prompt, seed=self.seed,
                    sample=self.sample, id=self.sample_id)


@dataclasses.dataclass
class ControlEvalResult:
    """What :func:`evaluate_control` measured.

    Attributes:
        images: the generated ``(H, W, 3)`` uint8 RGB images in held-out order: all ``N``, or the first ones only
            where the caller kept fewer (:func:`evaluate_control_sliced` keeps ``keep_images``).
        matches: ``N`` :class:`~posedreamer_mm.scoring.matching.LabelMatch` (OKS 0 and a reason when unmatched).
        oks: ``(N,)`` float64 per-image OKS in ``[0, 1]``.
    """

    images: list[np.ndarray]
    matches: list[LabelMatch]
    oks: np.ndarray

    @property
    def mean_oks(self) -> float:
        return control_accuracy(self.oks)['mean_oks']

    @property
    def oks_error(self) -> float:
        """``1 - mean_oks``: the quantity DPO reduces."""
        return control_accuracy(self.oks)['oks_error']

    @property
    def num_unmatched(self) -> int:
        return sum(m.index is None for m in self.matches)

    def scalars(self, prefix: str = 'control_val/') -> dict[str, float]:
        """``mean_oks``, ``oks_error`` and ``frac_unmatched`` under ``prefix`` (what the hook logs)."""
        acc = control_accuracy(self.oks)
        return {f'{prefix}mean_oks': acc['mean_oks'], f'{prefix}oks_error': acc['oks_error'],
                f'{prefix}frac_unmatched': self.num_unmatched / len(self.oks)}


def select_indices(total: int, num: int) -> list[int]:
    """``min(num, total)`` distinct row indices evenly spaced over ``[0, total)``, first row included.

    Deterministic (the same rows at every call), and spread over the whole dataset rather than its first shard.
    """
    if total < 1:
        raise ValueError('the held-out dataset has no samples')
    if num < 1:
        raise ValueError(f'num_samples must be >= 1, got {num}')
    num = min(int(num), int(total))
    return [int(i) * total // num for i in range(num)]


#: Control resampling (``datasets/transforms/control_pair_transforms.py``'s ``ResizeControlPair`` uses the same).
CONTROL_INTERPOLATION = dict(nearest=cv2.INTER_NEAREST, linear=cv2.INTER_LINEAR)


def _resize(img: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    h, w = img.shape[:2]
    if (w, h) == tuple(size):
        return img
    return cv2.resize(img, tuple(size), interpolation=CONTROL_INTERPOLATION[interpolation])


def scale_keypoints(keypoints: np.ndarray, src_wh: tuple[int, int], dst_wh: tuple[int, int]) -> np.ndarray:
    """``(17, 3)`` keypoints moved from an image of size ``src_wh`` to the same image resized to ``dst_wh``.

    Uses the pixel-centre convention of ``cv2.resize`` (pixel ``i`` covers ``[i - 0.5, i + 0.5]``), the resize that
    moved the control: ``x' = (x + 0.5) * W' / W - 0.5``. Visibilities are kept.
    """
    out = np.asarray(keypoints, np.float64).copy()
    for axis in (0, 1):
        s = dst_wh[axis] / src_wh[axis]
        out[:, axis] = (out[:, axis] + 0.5) * s - 0.5
    return out


def load_held_out(data: str | os.PathLike | Any, num_samples: int, control_types: Sequence[str],
                  size: tuple[int, int] | int | None = None,
                  control_interpolation: str = 'nearest') -> list[HeldOutSample]:
    """The fixed held-out set: rows :func:`select_indices` of a generated dataset with labels.

    Args:
        data: a generated dataset folder (``docs/dataset_format.md``) or a ``GeneratedDataReader``.
        num_samples: rows to take (all rows when the dataset is smaller).
        control_types: the controls to read, in the model's order (the dataset must have stored them:
            ``save_controls=True``).
        size: evaluation size ``(W, H)`` (or one side for a square): controls are resized to it and the label's
            keypoints moved with them (:func:`scale_keypoints`); ``None`` keeps each control's stored size.
        control_interpolation: ``'nearest'`` (a PNCC or skeleton colour stays one the renderer draws, as control
            training resizes them) or ``'linear'`` (smooth controls such as depth).

    Raises:
        ValueError: naming the dataset and row when a row has no label keypoints or lacks a control.
    """
    from posedreamer_mm.generation.reader import GeneratedDataReader
    reader = data if hasattr(data, 'control_path') else GeneratedDataReader(data)
    if isinstance(size, int):
        size = (size, size)
    if not control_types:
        raise ValueError('load_held_out needs at least one control type')
    if control_interpolation not in CONTROL_INTERPOLATION:
        raise ValueError(f'control_interpolation must be one of {sorted(CONTROL_INTERPOLATION)}, got '
                         f'{control_interpolation!r}')
    out = []
    for i in select_indices(len(reader), num_samples):
        meta, sample = reader.meta(i), reader.sample(i)
        where = f'{reader!r}, row {i} (id {meta["id"]!r})'
        if sample.keypoints_coco17 is None:
            raise ValueError(f'{where} has no keypoints_coco17 label: the held-out set needs labelled samples')
        controls = {}
        for ctype in control_types:
            try:
                path = reader.control_path(i, ctype)
            except KeyError as err:
                raise ValueError(f'{where}: {err.args[0]}') from None
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f'{where}: cannot read control image {path}')
            controls[ctype] = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        h, w = next(iter(controls.values())).shape[:2]
        dst = tuple(int(s) for s in size) if size is not None else (w, h)
        out.append(HeldOutSample(
            sample_id=str(meta['id']),
            controls={k: _resize(v, dst, control_interpolation) for k, v in controls.items()},
            prompt=str(meta.get('prompt') or ''), negative_prompt=str(meta.get('negative_prompt') or ''),
            seed=int(meta['seed']), keypoints=scale_keypoints(sample.keypoints_coco17, (w, h), dst), sample=sample))
    return out


def pipeline_backend(pipeline: Any, control_types: Sequence[str], backend: dict | None = None):
    """A generation backend that runs an already built (live) diffusers pipeline.

    The backend class is ``backend['type']`` or, by default, the registered backend whose ``pipeline_class`` is
    the pipeline's class name. Its weights are never loaded (the pipeline is set as its ``pipe``): its control
    arguments are given from ``control_types`` (``controlnets=[dict(control_type=...)]`` or ``control_type=...``,
    whichever its constructor takes), and ``backend``'s other keys (``num_inference_steps``, ``guidance_scale``,
    ``call_kwargs`` ...) are passed on.

    Raises:
        ValueError: no registered backend runs this pipeline class.
    """
    from posedreamer_mm.registry import BACKENDS
    BACKENDS.import_from_location()
    spec = dict(backend or {})
    name = spec.pop('type', None)
    pipe_cls = type(pipeline).__name__
    if name is None:
        found = [cls for cls in BACKENDS.module_dict.values() if getattr(cls, 'pipeline_class', None) == pipe_cls]
        if not found:
            raise ValueError(f'no registered generation backend runs a {pipe_cls}; name one in backend=dict(type=...)')
        cls = found[0]
    else:
        cls = BACKENDS.get(name)
        if cls is None:
            raise ValueError(f'backend type {name!r} is not in the generation backend registry')
    params = inspect.signature(cls.__init__).parameters
    kwargs = dict(weights=LIVE_PIPELINE, device=str(getattr(pipeline, 'device', 'cpu')))
    if 'controlnets' in params:
        kwargs['controlnets'] = [dict(weights=LIVE_PIPELINE, control_type=c) for c in control_types]
    elif 'control_type' in params:
        if len(control_types) != 1:
            raise ValueError(f'{cls.__name__} takes one control type, got {list(control_types)}')
        kwargs['control_type'] = control_types[0]
    elif 'control_types' in params:
        kwargs['control_types'] = list(control_types)
    kwargs.update(spec)
    out = cls(**kwargs)
    out.pipe = pipeline
    return out


def generate_images(generator: Any, held_out: Sequence[HeldOutSample], batch_size: int = 1) -> list[np.ndarray]:
    """One ``(H, W, 3)`` uint8 RGB image per held-out sample.

    Args:
        generator: a generation backend (``generate(list of results dicts)``); a backend with a pipeline
            (``call_arguments``) is called here under ``torch.no_grad`` rather than its ``inference_mode`` so that
            tensors a live training model caches stay usable by autograd afterwards.
        held_out: the samples.
        batch_size: samples per call (images do not depend on it: one seeded generator per sample).
    """
    images: list[np.ndarray] = []
    for start in range(0, len(held_out), max(1, int(batch_size))):
        batch = [s.results() for s in held_out[start:start + max(1, int(batch_size))]]
        if hasattr(generator, 'call_arguments') and getattr(generator, 'pipe', None) is not None:
            kwargs = generator.call_arguments(batch)
            with torch.no_grad():
                out = np.asarray(generator.pipe(**kwargs).images, np.float32)
            images += list(np.round(np.clip(out, 0, 1) * 255).astype(np.uint8))
        else:
            images += [np.asarray(img) for img in generator.generate(batch)]
    for s, img in zip(held_out, images):
        check_rgb_image(img, f'the image generated for {s.sample_id!r}')
    if len(images) != len(held_out):
        raise ValueError(f'the generator returned {len(images)} images for {len(held_out)} samples')
    return images


def score_images(images: Sequence[np.ndarray], held_out: Sequence[HeldOutSample], scorer: BasePoseScorer,
                 keypoint_thr: float = 0.3, min_keypoints: int = 4) -> ControlEvalResult:
    """Scores each image against its label (:func:`~posedreamer_mm.scoring.matching.match_label`).

    Raises:
        ValueError: an image is not the size of its controls (the label would not fit it).
    """
    for s, img in zip(held_out, images):
        h, w = next(iter(s.controls.values())).shape[:2]
        if img.shape[:2] != (h, w):
            raise ValueError(f'the image of {s.sample_id!r} is {img.shape[1]}x{img.shape[0]}, its control {w}x{h}: '
                             'the label keypoints would not fit it')
    detections = scorer.predict_batch(list(images))
    matches = [match_label(d, s.keypoints, keypoint_thr, min_keypoints) for d, s in zip(detections, held_out)]
    return ControlEvalResult(list(images), matches, np.array([m.oks for m in matches], np.float64))


def evaluate_control(generator: Any, held_out: Sequence[HeldOutSample], scorer: BasePoseScorer,
                     control_types: Sequence[str] | None = None, backend: dict | None = None, batch_size: int = 1,
                     keypoint_thr: float = 0.3, min_keypoints: int = 4) -> ControlEvalResult:
    """Generates the held-out set and scores it.

    Args:
        generator: a generation backend, or a diffusers pipeline (wrapped by :func:`pipeline_backend` with
            ``control_types`` (default: the held-out samples' control types) and ``backend``).
        held_out: from :func:`load_held_out`.
        scorer: a pose scorer (``SCORERS``).
        batch_size: samples per pipeline call.
        keypoint_thr, min_keypoints: :func:`~posedreamer_mm.scoring.matching.match_label`'s.
    """
    if not held_out:
        raise ValueError('evaluate_control needs at least one held-out sample')
    if not hasattr(generator, 'generate'):
        generator = pipeline_backend(generator, control_types or list(held_out[0].controls), backend)
    images = generate_images(generator, held_out, batch_size)
    return score_images(images, held_out, scorer, keypoint_thr, min_keypoints)


def control_contact_sheet(held_out: Sequence[HeldOutSample], images: Sequence[np.ndarray],
                          oks: Sequence[float] | None = None, max_rows: int = 8, tile: int = 128,
                          base_images: Sequence[np.ndarray] | None = None,
                          base_oks: Sequence[float] | None = None) -> np.ndarray:
    """A contact sheet: per sample, the generated image, the image with the label's skeleton, each control.

    With ``base_images`` (DPO: the base model's images, same seeds) a ``base`` column comes first. Each row's
    caption gives the end of the sample id and its OKS (``base -> current`` when both are given).

    Returns:
        ``(H, W, 3)`` uint8 RGB (``visualization/contact_sheet.py``'s ``tile_sheet`` layout).
    """
    n = min(len(held_out), len(images), int(max_rows))
    if base_images is not None:
        n = min(n, len(base_images))
    if n == 0:
        raise ValueError('nothing to show: no held-out images')
    types = list(held_out[0].controls)
    rows, captions = [], []
    for r in range(n):
        s, img = held_out[r], images[r]
        overlay = draw_coco17(np.ascontiguousarray(img), s.keypoints, radius=max(1, img.shape[0] // 128))
        rows.append(([base_images[r]] if base_images is not None else []) + [img, overlay]
                    + [s.controls[t] for t in types])
        score = '' if oks is None else f'{oks[r]:.2f}'
        if base_oks is not None:
            score = f'{base_oks[r]:.2f}' + (f' -> {score}' if score else '')
        captions.append(s.sample_id[-18:] + (f' oks {score}' if score else ''))
    columns = (['base'] if base_images is not None else []) + ['generated', 'generated + label'] + types
    return tile_sheet(rows, columns, captions, tile)


def evaluate_control_sliced(generator: Any, held_out: Sequence[HeldOutSample], scorer: BasePoseScorer,
                            keep_images: int = 8, **kwargs) -> ControlEvalResult:
    """:func:`evaluate_control` with the held-out set split over the distributed ranks.

    Rank ``r`` of ``W`` generates and scores samples ``r, r + W, ...``; the OKS values and matches (and the
    images of the first ``keep_images`` samples, for the contact sheet) are gathered so that every rank returns
    the same full result. Images depend only on their own seed, so the result does not depend on ``W``. A rank that
    fails still joins the gather (with its error), and then every rank raises, naming the failed ranks: no rank is
    left waiting in a collective. Without a process group this is :func:`evaluate_control` (``W = 1``).

    Args:
        keep_images: how many of the first held-out samples keep their images in the result.
        **kwargs: :func:`evaluate_control`'s.
    """
    from mmengine.dist import all_gather_object, get_dist_info
    rank, world = get_dist_info()
    mine = list(range(rank, len(held_out), world))
    try:
        part = evaluate_control(generator, [held_out[i] for i in mine], scorer, **kwargs) if mine else None
        payload = dict(error=None, items=[
            (i, part.matches[j], part.images[j] if i < keep_images else None) for j, i in enumerate(mine)])
    except Exception as err:  # gathered so that the other ranks raise too instead of waiting
        payload = dict(error=f'{type(err).__name__}: {err}', items=[])
        if world == 1:
            raise
    gathered = all_gather_object(payload)
    errors = [f'rank {r}: {p["error"]}' for r, p in enumerate(gathered) if p['error']]
    if errors:
        raise RuntimeError('control evaluation failed on ' + '; '.join(errors))
    items = sorted((item for p in gathered for item in p['items']), key=lambda t: t[0])
    matches = [m for _, m, _ in items]
    images = [img for i, _, img in items if i < keep_images]
    return ControlEvalResult(images, matches, np.array([m.oks for m in matches], np.float64))


@contextlib.contextmanager
def preserved_training_state(model: torch.nn.Module):
    """Runs the body with ``model`` in eval mode, then restores every submodule's train/eval flag and the random
    number generators (Python, numpy, torch CPU and every initialised CUDA device).

    Validation inside training must not change the training trajectory: a draw from a global generator (by a
    scorer, a scheduler or a dropout layer) would shift every later noise and timestep sample.
    """
    modes = [(m, m.training) for m in model.modules()]
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() \
        else None
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
