"""The work before the backend, per sample: source -> body -> crop camera -> controls -> visibility -> prompt.

:class:`SamplePreparer` runs in the generating process (``num_workers=0``) or in worker processes started with
``spawn`` (docs/rendering.md, "Workers": a forked child must not reuse the parent's GL state), each building its
own source, body models and renderers from the same configs. :class:`PreparedStream` hands the results back in
index order with a bounded number in flight, so memory stays flat however slow the backend is.
"""
from __future__ import annotations

import collections
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from mmengine.logging import print_log

from posedreamer_mm.body.body_model import BodyModelFileError
from posedreamer_mm.body.gendered import GenderedSMPLXBodyModel
from posedreamer_mm.body.sample import validate_sample_id
from posedreamer_mm.body.sources.base import stable_seed
from posedreamer_mm.registry import GENERATORS, POSE_SOURCES
from .transforms import BodyCropCamera, BodyForward, COCO17Visibility, RenderControls, SamplePrompt, build_renderer

#: Keys a worker does not send back: the backend and the writer never need them (faces come from the main
#: process's own body models; the depth map and clip planes only served the visibility test).
_LOCAL_KEYS = ('faces', 'depth', 'clip_planes')


class Prepared(NamedTuple):
    """One source index after the pre-backend transforms.

    ``status``: ``'ok'`` (``payload`` is the results dict), ``'drop'`` / ``'fail'`` (``payload`` is
    ``(sample id, reason key, message)``) or ``'fatal'`` (``payload`` is the message: stop the run).
    """
    index: int
    status: str
    payload: Any
    timings: dict[str, float]


class SamplePreparer:
    """Builds a sample's results dict up to the backend's input.

    Args:
        source: ``POSE_SOURCES`` config (or a built source, in-process only).
        body_model: ``BODY_MODELS`` config of SMPL-X (``GenderedSMPLXBodyModel.from_config``); one model per
            gender is built from it on first use, the config's own gender at once (the renderers use it).
        controls: Renderer configs (``RENDERERS``, without ``size``), keyed by nothing: each image is stored under
            its renderer's ``control_type``.
        prompts: ``GENERATORS`` config of a :class:`~posedreamer_mm.generation.prompts.PromptSampler`.
        crop_size: Side of the crop camera, pixels.
        crop_margin: Crop margin around the body's projected box.
        seed: Global seed; a sample's seed is ``stable_seed(seed, sample id)``.
        min_visible_keypoints: Drop samples with fewer COCO-17 keypoints in the image.
    """

    def __init__(self, source: Any, body_model: dict, controls: list[dict], prompts: dict, crop_size: int,
                 crop_margin: float, seed: int, min_visible_keypoints: int = 0) -> None:
        self.source = POSE_SOURCES.build(source) if isinstance(source, dict) else source
        self.body_models = GenderedSMPLXBodyModel.from_config(body_model)
        self.seed = int(seed)
        renderers = {}
        for cfg in controls:
            renderer = build_renderer(cfg, self.body_models.default)
            if renderer.control_type in renderers:
                raise ValueError(f'two controls render {renderer.control_type!r}; each control type once')
            renderers[renderer.control_type] = renderer
        prompt_sampler = GENERATORS.build(prompts) if isinstance(prompts, dict) else prompts
        self.transforms = [BodyForward(self.body_models), BodyCropCamera(crop_size, crop_margin),
                           RenderControls(renderers), COCO17Visibility(min_visible_keypoints),
                           SamplePrompt(prompt_sampler)]
        self.control_types = list(renderers)

    def __call__(self, index: int) -> Prepared:
        timings: dict[str, float] = {}
        sample_id = f'<index {index}>'
        t = time.perf_counter()
        try:
            sample = self.source[index]
            sample_id = str(sample.id)
            validate_sample_id(sample_id)
        except Exception as err:  # a file gone or corrupt mid-run: counted, not fatal
            return Prepared(index, 'fail', (sample_id, f'source:{type(err).__name__}', f'{type(err).__name__}: '
                                            f'{err}'), timings)
        timings['source'] = time.perf_counter() - t
        results: dict | None = dict(sample=sample, id=sample_id, index=index, seed=stable_seed(self.seed, sample_id))
        for transform in self.transforms:
            name = type(transform).__name__
            t = time.perf_counter()
            try:
                out = transform(results)
            except BodyModelFileError as err:
                return Prepared(index, 'fatal', f'{err}', timings)
            except Exception as err:
                return Prepared(index, 'fail', (sample_id, f'{name}:{type(err).__name__}',
                                                f'{type(err).__name__}: {err}'), timings)
            timings[name] = time.perf_counter() - t
            if out is None:
                return Prepared(index, 'drop', (sample_id, results.get('drop_reason') or f'{name}:unspecified',
                                                ''), timings)
            results = out
        return Prepared(index, 'ok', results, timings)


# --- worker processes ---------------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(cfg: dict, imports: list[str]) -> None:
    """Spawn-worker initialiser: registers components, builds this process's :class:`SamplePreparer`."""
    os.environ.setdefault('LP_NUM_THREADS', '0')  # one core per worker: llvmpipe rasterises in this thread
    try:
        import importlib

        import torch
        torch.set_num_threads(1)
        # Only what preparing needs registered (not all of mmpose/mmdet: start-up is paid per worker).
        for module in ('posedreamer_mm.body', 'posedreamer_mm.render', 'posedreamer_mm.generation', *imports):
            importlib.import_module(module)
        _WORKER['preparer'] = SamplePreparer(**cfg)
    except Exception as err:  # reported by every task: a failing initialiser would be respawned forever
        _WORKER['error'] = f'worker set-up failed: {type(err).__name__}: {err}'


def _worker_ready() -> bool:
    """A no-op task: it completes once some worker has finished its initialiser."""
    return 'error' not in _WORKER


def _prepare_in_worker(indices: list[int]) -> list[Prepared]:
    if 'error' in _WORKER:
        return [Prepared(i, 'fatal', _WORKER['error'], {}) for i in indices]
    out = []
    for index in indices:
        item = _WORKER['preparer'](index)
        if item.status == 'ok':
            for key in _LOCAL_KEYS:
                item.payload.pop(key, None)
        out.append(item)
    return out


class PreparedStream:
    """Prepares indices in order, in-process or in ``num_workers`` spawn processes, ``max_in_flight`` ahead.

    Args:
        cfg: :class:`SamplePreparer` arguments (picklable configs when ``num_workers > 0``).
        num_workers: 0 prepares in the calling process.
        max_in_flight: Chunks submitted ahead of the consumer (bounds memory).
        chunk_size: Indices per task sent to a worker.
        imports: Modules a worker imports first (the config's ``custom_imports``).
        local_cfg: :class:`SamplePreparer` arguments for preparing in this process (``num_workers=0`` and the
            warm start; may hold built objects such as the source); ``cfg`` if not given.
        warm_start: With workers, prepare in this process until the first worker is ready.
    """

    def __init__(self, cfg: dict, num_workers: int = 0, max_in_flight: int | None = None, chunk_size: int = 2,
                 imports: list[str] | None = None, local_cfg: dict | None = None, warm_start: bool = True) -> None:
        self.cfg, self.num_workers, self.chunk_size = cfg, int(num_workers), max(1, int(chunk_size))
        self.max_in_flight = max_in_flight or max(4, 4 * self.num_workers)
        self.imports = list(imports or [])
        self.local_cfg = local_cfg if local_cfg is not None else cfg
        self._preparer: SamplePreparer | None = None
        self.warm_start = bool(warm_start)
        self._pool = None
        #: ``time.perf_counter()`` when the workers took over (None while the warm start prepares in-process).
        self.workers_ready_at: float | None = None

    def __enter__(self) -> PreparedStream:
        if self.num_workers > 0:
            ctx = mp.get_context('spawn')
            self._pool = ctx.Pool(self.num_workers, initializer=_init_worker, initargs=(self.cfg, self.imports))
            print_log(f'preparing samples in {self.num_workers} spawn worker processes', logger='current',
                      level=logging.INFO)
        elif self._preparer is None:
            self._preparer = SamplePreparer(**self.local_cfg)
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __call__(self, indices: Iterable[int]) -> Iterator[Prepared]:
        if self._pool is None or not self.warm_start:
            self.workers_ready_at = time.perf_counter()
        if self._pool is None:
            for index in indices:
                yield self._preparer(index)
            return
        indices, start = list(indices), 0
        if self.warm_start:
            # Workers take seconds to start (imports, body models, GL contexts): until one is ready, prepare here,
            # so the backend starts at once. Same results either way (a sample depends only on its index).
            ready = self._pool.apply_async(_worker_ready)
            while start < len(indices) and not ready.ready():
                if self._preparer is None:
                    self._preparer = SamplePreparer(**self.local_cfg)
                    continue
                yield self._preparer(indices[start])
                start += 1
            self.workers_ready_at = time.perf_counter()
        chunks = [indices[i:i + self.chunk_size] for i in range(start, len(indices), self.chunk_size)]
        pending: collections.deque = collections.deque()
        for chunk in chunks:
            pending.append(self._pool.apply_async(_prepare_in_worker, (chunk,)))
            if len(pending) >= self.max_in_flight:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()
