"""The work before the backend, per source index: the source's sample, then the config's ``pipeline``.

:class:`SamplePreparer` runs in the generating process (``num_workers=0``, and the warm start) or in spawn worker
processes (:class:`~posedreamer_mm.utils.pool.SpawnPool`; docs/rendering.md, "Workers": a forked child must not
reuse the parent's GL state), each building its own source, body model and transforms from the same configs.
:class:`PreparedStream` hands the outcomes back in index order with a bounded number in flight, so memory stays
flat however slow the backend is; a worker that dies stops the run with an error naming its source indices.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from mmengine.logging import print_log

from posedreamer_mm.body.body_model import BodyModelFileError
from posedreamer_mm.body.sample import validate_sample_id
from posedreamer_mm.body.sources.base import stable_seed
from posedreamer_mm.registry import POSE_SOURCES, TRANSFORMS
from posedreamer_mm.utils.pool import SpawnPool

from .steps import StepOutcome, StepRunner, build_step, step_names
from .transforms import gendered_body_model

#: Keys of a results dict before the first pipeline step (``LoadSample``'s, and ``index``).
SOURCE_KEYS = frozenset({'index', 'id', 'sample', 'seed'})


class LoadSample:
    """The first step: the source's sample at ``results['index']``, its id and its seed.

    Added Keys:
        - sample: the source's :class:`~posedreamer_mm.body.sample.BodySample`
        - id: its id (checked: it names files)
        - seed: ``stable_seed(seed, id)``, so a sample depends only on its index, never on rank or batch
    """

    def __init__(self, source: Any, seed: int) -> None:
        self.source, self.seed = source, int(seed)

    def __call__(self, results: dict) -> dict:
        sample = self.source[results['index']]
        results['id'] = str(sample.id)
        validate_sample_id(results['id'])
        results.update(sample=sample, seed=stable_seed(self.seed, results['id']))
        return results


class SamplePreparer:
    """Builds a sample's results dict up to the backend's input.

    Args:
        source: ``POSE_SOURCES`` config (or a built source, in-process only).
        body_model: ``BODY_MODELS`` config of SMPL-X (``GenderedSMPLXBodyModel.from_config``), or the built
            :class:`~posedreamer_mm.body.gendered.GenderedSMPLXBodyModel`; handed to every pipeline transform whose
            constructor takes ``body_model`` and whose config sets none.
        pipeline: ``TRANSFORMS`` configs (or built transforms), run in order after the source.
        seed: Global seed; a sample's seed is ``stable_seed(seed, sample id)``.
    """

    def __init__(self, source: Any, body_model: Any, pipeline: Sequence[Any], seed: int) -> None:
        self.source = POSE_SOURCES.build(source) if isinstance(source, dict) else source
        self.body_model = gendered_body_model(body_model)
        self.transforms = [build_step(TRANSFORMS, cfg, self.body_model) for cfg in pipeline]
        # A missing body-model file is the run's error, not the sample's.
        self.runner = StepRunner([LoadSample(self.source, seed), *self.transforms],
                                 names=['source', *step_names(self.transforms)], fatal=(BodyModelFileError,))

    def __call__(self, index: int) -> StepOutcome:
        return self.runner(dict(index=int(index), id=f'<index {index}>'))


# --- worker processes ---------------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(cfg: dict, imports: list[str]) -> None:
    """Spawn-worker initialiser: registers components, builds this process's :class:`SamplePreparer`."""
    os.environ.setdefault('LP_NUM_THREADS', '0')  # one core per worker: llvmpipe rasterises in this thread
    import importlib

    import torch
    torch.set_num_threads(1)
    # Only what preparing needs registered (not all of mmpose/mmdet: start-up is paid per worker).
    for module in ('posedreamer_mm.body', 'posedreamer_mm.render', 'posedreamer_mm.generation', *imports):
        importlib.import_module(module)
    _WORKER['preparer'] = SamplePreparer(**cfg)


def _prepare_chunk(indices: list[int]) -> list[StepOutcome]:
    return [_WORKER['preparer'](index) for index in indices]


class PreparedStream:
    """Prepares indices in order, in-process or in ``num_workers`` spawn processes, a bounded number ahead.

    Args:
        local: The :class:`SamplePreparer` of this process (``num_workers=0`` and the warm start).
        cfg: :class:`SamplePreparer` arguments for the workers (picklable configs).
        num_workers: 0 prepares in the calling process.
        imports: Modules a worker imports first (the config's ``custom_imports``).
        warm_start: With workers, prepare in this process until the first worker is ready.
        chunk_size: Indices per task sent to a worker.
        max_in_flight: Chunks sent ahead of the consumer (bounds memory).
        describe: Names a chunk in errors (e.g. its shard).
    """

    def __init__(self, local: SamplePreparer, cfg: dict, num_workers: int = 0, imports: list[str] | None = None,
                 warm_start: bool = True, chunk_size: int = 2, max_in_flight: int | None = None,
                 describe: Callable[[list[int]], str] | None = None) -> None:
        self.local, self.cfg, self.num_workers = local, cfg, int(num_workers)
        self.imports, self.warm_start, self.chunk_size = list(imports or []), bool(warm_start), max(1, chunk_size)
        self.max_in_flight = max_in_flight or max(4, 4 * self.num_workers)
        self.describe = describe or (lambda chunk: f'source indices {chunk}')
        self._pool: SpawnPool | None = None
        #: ``time.perf_counter()`` when the workers took over (None while the warm start prepares in-process).
        self.workers_ready_at: float | None = None

    def __enter__(self) -> PreparedStream:
        if self.num_workers > 0:
            self._pool = SpawnPool(self.num_workers, _prepare_chunk, _init_worker, (self.cfg, self.imports),
                                   describe=self.describe, name='preparation').start()
            print_log(f'preparing samples in {self.num_workers} spawn worker processes', logger='current',
                      level=logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __call__(self, indices: Iterable[int]) -> Iterator[StepOutcome]:
        if self._pool is None or not self.warm_start:
            self.workers_ready_at = time.perf_counter()
        if self._pool is None:
            for index in indices:
                yield self.local(index)
            return
        indices, start = list(indices), 0
        if self.warm_start:
            # Workers take seconds to start (imports, body models, GL contexts): until one is ready, prepare here,
            # so the backend starts at once. Same results either way (a sample depends only on its index).
            while start < len(indices) and not self._pool.any_ready():
                yield self.local(indices[start])
                start += 1
            self.workers_ready_at = time.perf_counter()
        chunks = [indices[i:i + self.chunk_size] for i in range(start, len(indices), self.chunk_size)]
        for outcomes in self._pool.imap(chunks, max_in_flight=self.max_in_flight):
            yield from outcomes
