"""The main job: bodies in, images with exact SMPL-X labels out, as a sharded, resumable dataset.

::

    generator = GENERATORS.build(dict(
        type='DatasetGenerator', body_model=dict(type='SMPLXBodyModel', model_path=...), source=...,
        pipeline=[dict(type='BodyForward'), dict(type='BodyCropCamera', size=512, margin=0.1),
                  dict(type='RenderControls', controls=[dict(type='PNCCRenderer'), dict(type='DepthRenderer')]),
                  dict(type='COCO17Visibility', min_visible=8),
                  dict(type='SamplePrompt', prompts=dict(type='PromptSampler', preset='generic'))],
        backend=dict(type='RenderBackend', batch_size=8), stages=[...],
        writer=dict(shard_size=1000), num_samples=500_000, seed=0, num_workers=8))
    summary = generator.run('outputs/run')

Flow per source index (docs/generation.md, "Data flow"): the source's sample, then the ``pipeline`` transforms
(:mod:`posedreamer_mm.generation.transforms` or any registered transform) run in spawn worker processes
(:mod:`posedreamer_mm.generation.preparer`); the backend gets batches of ``backend.batch_size`` in the main thread
and is kept busy; the ``stages`` and the writer run in a thread (:class:`~posedreamer_mm.generation.sink.ShardSink`).
Each process builds ONE body model and hands it to every transform, renderer and backend whose constructor takes
``body_model`` (unless its config sets one). What a sample becomes depends only on its index (its id, its seed
``stable_seed(seed, id)``), so shards are assigned to ranks (``shard % world_size == rank``,
``writer.shards_of_rank``) and any number of ranks, kills and re-runs produce the same dataset.

With ``candidates_per_sample=N`` (DPO candidates, docs/dpo_pairs.md) every source index becomes N dataset rows:
row ``k`` is candidate ``k % N`` of source index ``k // N``. The pipeline (controls, prompt) runs once per source
index; its N candidates share it and differ only in their id ``<pose id>_c<j>`` and seed ``stable_seed(seed,
candidate id)``, so they are sharded, resumed and distributed like any rows.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os.path as osp
import time
from typing import Any

import numpy as np
from mmengine import dist
from mmengine.logging import print_log
from tqdm import tqdm

from posedreamer_mm.body.body_model import BodyModelFileError
from posedreamer_mm.body.sources.base import stable_seed
from posedreamer_mm.registry import BACKENDS, GENERATORS, TRANSFORMS
from posedreamer_mm.utils.fileio import atomic_write_text
from posedreamer_mm.utils.pool import WorkerError

from .preparer import SOURCE_KEYS, PreparedStream, SamplePreparer
from .sink import GenerationError, ShardSink
from .steps import StepOutcome, build_step, check_pipeline_keys
from .writer import SHARD_INFO, SHARDS_DIR, SUMMARY, OutputConflictError, ShardedDatasetWriter, shards_of_rank

#: Keys the generator adds after the backend (``img``: the generated image, ``backend``: the backend's name).
BACKEND_KEYS = frozenset({'img', 'backend'})

__all__ = ['DatasetGenerator', 'GenerationError', 'candidate_id', 'config_fingerprint', 'plain']


def candidate_id(pose_id: str, candidate: int) -> str:
    """The dataset id of candidate ``candidate`` of the pose ``pose_id`` (``candidates_per_sample``)."""
    return f'{pose_id}_c{int(candidate):03d}'


def plain(value: Any) -> Any:
    """JSON-able copy of a config value (ConfigDicts -> dicts, tuples -> lists, objects -> their type name)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    return f'<{type(value).__module__}.{type(value).__qualname__}>'


def config_fingerprint(config: dict) -> str:
    """sha256 (16 hex digits) of the canonical JSON of ``config``."""
    return hashlib.sha256(json.dumps(plain(config), sort_keys=True).encode()).hexdigest()[:16]


@GENERATORS.register_module()
class DatasetGenerator:
    """Generates a labelled image dataset from a pose source with a backend (docs/generation.md).

    Args:
        body_model: ``BODY_MODELS`` config of SMPL-X (``SMPLXBodyModel`` or ``GenderedSMPLXBodyModel``,
            ``posedreamer_mm/body/gendered.py``). Each process builds one
            :class:`~posedreamer_mm.body.gendered.GenderedSMPLXBodyModel` from it (a model per gender the source
            yields, on first use) and hands it to every pipeline transform, stage and backend whose constructor
            takes ``body_model`` and whose config does not set one.
        source: ``POSE_SOURCES`` config (or a built source when ``num_workers=0``).
        pipeline: The per-sample transforms before the backend, ``TRANSFORMS`` configs run in order (module
            :mod:`posedreamer_mm.generation.transforms`; a config may add its own registered steps anywhere).
        backend: ``BACKENDS`` config (``BaseGenerationBackend`` API) or a backend object.
        stages: Post-backend transforms (scoring, filters), ``TRANSFORMS`` configs or objects.
        writer: :class:`~posedreamer_mm.generation.writer.ShardedDatasetWriter` arguments (the dataset format,
            docs/dataset_format.md; not a registry: another writer would be another format).
        num_samples: Source indices to generate, ``[0, num_samples)``; ``None`` = the whole source.
        seed: Global seed; a sample's seed is ``stable_seed(seed, sample id)``.
        num_workers: Spawn worker processes for the pipeline (0: in the main process).
        warm_start: With workers, prepare samples in the main process until the first worker has started, so
            the backend starts at once (worker start-up takes seconds: imports, body models, GL contexts).
        max_failure_rate: Stop the run (not marked complete) when more than this fraction of the samples handled
            so far failed, checked from ``failure_rate_min_samples`` on; ``None`` never stops. A shard with no
            written sample and a failure always stops the run.
        failure_rate_min_samples: Samples handled before ``max_failure_rate`` is checked.
        custom_imports: Modules the workers import before building (the config's ``custom_imports``).
        progress: Show a progress bar.
        candidates_per_sample: Images per source index (DPO candidates): ``num_samples * N`` rows, row ``k``
            candidate ``k % N`` of source index ``k // N`` with id ``<pose id>_c<jjj>`` and seed
            ``stable_seed(seed, that id)``; the row records ``group`` (the pose id) and ``candidate`` (``j``). The
            pipeline runs once per source index and its candidates share its controls and prompt (a shard size that
            is a multiple of N keeps a pose's candidates in one shard, so its controls are rendered once). 1: one
            image per source index (ids and seeds as without this option).

    Raises:
        ValueError: a bad setting, or a step or stage whose Required Keys no earlier step adds (e.g.
            ``FilterByOKS`` without ``ScorePose``: inside the generator there are no stored scores).
    """

    def __init__(self, body_model: dict, source: Any, pipeline: list, backend: Any, stages: list | tuple = (),
                 writer: dict | None = None, num_samples: int | None = None, seed: int = 0, num_workers: int = 0,
                 warm_start: bool = True, max_failure_rate: float | None = 0.5, failure_rate_min_samples: int = 50,
                 custom_imports: list[str] | None = None, progress: bool = True,
                 candidates_per_sample: int = 1) -> None:
        if int(candidates_per_sample) < 1:
            raise ValueError(f'candidates_per_sample must be >= 1, got {candidates_per_sample}')
        self.candidates_per_sample = int(candidates_per_sample)
        if max_failure_rate is not None and not 0 <= float(max_failure_rate) <= 1:
            raise ValueError(f'max_failure_rate must be in [0, 1] or None, got {max_failure_rate}')
        self.seed = int(seed)
        self.body_model_cfg = plain(body_model)
        self.source_cfg, self.pipeline_cfg = source, list(pipeline)
        self.backend_cfg, self.stage_cfgs = backend, list(stages)
        # This process's body model, source and steps: the warm start and num_workers=0 prepare with them, and
        # building them here refuses a bad config before any worker starts or any sample is generated.
        self.preparer = SamplePreparer(source, self.body_model_cfg, self.pipeline_cfg, self.seed)
        self.body_model, self.source = self.preparer.body_model, self.preparer.source
        if num_samples is None:
            num_samples = len(self.source)
        if int(num_samples) < 1:
            raise ValueError(f'num_samples must be >= 1, got {num_samples} (source length {len(self.source)})')
        if int(num_samples) > len(self.source):
            raise ValueError(f'num_samples={num_samples} but the source has {len(self.source)} samples; generate '
                             'at most that many (AugmentedSource(repeats=...) makes more variants per pose)')
        self.num_samples = int(num_samples)
        #: Dataset rows: ``num_samples`` source indices times ``candidates_per_sample``.
        self.num_rows = self.num_samples * self.candidates_per_sample
        self.backend = build_step(BACKENDS, backend, self.body_model)
        self.stages = [build_step(TRANSFORMS, s, self.body_model) for s in stages]
        writer = dict(writer or {})
        if 'type' in writer:
            raise ValueError(f'writer={writer}: the writer takes ShardedDatasetWriter\'s arguments (shard_size, '
                             'image_format, jpeg_quality, save_controls) and is no registry config; remove its type')
        self.writer = ShardedDatasetWriter(**writer)
        self.num_workers, self.custom_imports = int(num_workers), list(custom_imports or [])
        self.warm_start, self.progress = bool(warm_start), progress
        self.max_failure_rate = None if max_failure_rate is None else float(max_failure_rate)
        self.failure_rate_min_samples = int(failure_rate_min_samples)
        self._check_keys()

    def _check_keys(self) -> None:
        """Every step's Required Keys must be added by an earlier step (or the source, or the backend)."""
        steps = [(f'pipeline[{i}]', t) for i, t in enumerate(self.preparer.transforms)]
        available = check_pipeline_keys(steps, SOURCE_KEYS)
        check_pipeline_keys([(f'stages[{i}]', s) for i, s in enumerate(self.stages)], available | BACKEND_KEYS)

    # --- identity of the output ---------------------------------------------------------------------------------
    def content_config(self) -> dict:
        """Everything that decides what is written (not how fast): hashed into the manifest's fingerprint."""
        backend = self.backend_cfg
        if isinstance(backend, dict):
            backend = {k: v for k, v in plain(backend).items() if k != 'batch_size'}  # images never depend on it
        else:
            backend = dict(type=type(backend).__name__, record=plain(backend.record()))

        def described(cfg: Any) -> Any:
            return plain(cfg) if isinstance(cfg, dict) else repr(cfg)

        content = dict(
            source=plain(self.source_cfg) if isinstance(self.source_cfg, dict) else type(self.source).__name__,
            body_model=self.body_model_cfg, pipeline=[described(c) for c in self.pipeline_cfg],
            seed=self.seed, num_samples=self.num_samples, backend=backend,
            writer=self.writer.content_config(), stages=[described(s) for s in self.stage_cfgs])
        if self.candidates_per_sample != 1:  # absent at 1: earlier datasets keep their fingerprint
            content['candidates_per_sample'] = self.candidates_per_sample
        return content

    # --- the run ------------------------------------------------------------------------------------------------
    def _prepare_output(self, root: str, header: dict) -> None:
        """Rank 0 creates or checks the output; every rank learns the outcome (no rank hangs on an error)."""
        rank, world = dist.get_dist_info()
        message = [None]
        if rank == 0:
            try:
                self.writer.prepare_output(root, header)
            except OutputConflictError as err:
                message = [str(err)]
        if world > 1:
            dist.broadcast_object_list(message, src=0)
        if message[0] is not None:
            raise OutputConflictError(message[0])
        if rank != 0:
            self.writer.check_output(root, header)

    def run(self, out_dir: str) -> dict:
        """Generates every missing shard this rank owns; returns the summary (``<out_dir>/summary.json``).

        Raises:
            OutputConflictError: ``out_dir`` holds another config's dataset.
            GenerationError: a fatal error (missing body-model file, a worker's set-up or death, a backend failure,
                a shard whose samples all failed, more failures than ``max_failure_rate``).
            posedreamer_mm.generation.writer.ShardWriteError: a write failed (no half shard is left visible).
        """
        root = osp.abspath(out_dir)
        rank, world = dist.get_dist_info()
        content = self.content_config()
        header = dict(fingerprint=config_fingerprint(content), config=content, num_samples=self.num_rows,
                      seed=self.seed)
        self._prepare_output(root, header)
        try:
            num_shards = self.writer.num_shards(self.num_rows)
            owned = shards_of_rank(num_shards, rank, world)
            complete = self.writer.complete_shards(root)
            todo = [s for s in owned if s not in complete]
            self.writer.remove_partial(root, set(todo))
            indices = [i for s in todo for i in self.writer.shard_range(s, self.num_rows)]
            print_log(f'rank {rank}/{world}: {len(owned)} shards owned, {len(owned) - len(todo)} already complete, '
                      f'{len(indices)} samples to generate -> {root}', logger='current')
            idle = dict(written=0, dropped=0, failed=0, wall_s=0.0, steady_wall_s=0.0, backend_busy_s=0.0,
                        backend_busy_steady_s=0.0, timings_s={})
            stats = self._generate(root, todo, indices) if indices else idle
            stats['shards_skipped_complete'] = len(owned) - len(todo)
            gathered = dist.all_gather_object(stats) if world > 1 else [stats]
            summary = None
            if rank == 0:
                manifest = self.writer.finalize(root, self.num_rows,
                                                extra=dict(backend_record=plain(self.backend.record())))
                summary = self._summary(root, manifest, gathered)
                atomic_write_text(osp.join(root, SUMMARY), json.dumps(summary, indent=1, sort_keys=True))
            if world > 1:
                holder = [summary]
                dist.broadcast_object_list(holder, src=0)
                summary = holder[0]
            return summary
        finally:
            if rank == 0:  # a killed run's lock goes stale on its own (posedreamer_mm/utils/output_lock.py)
                self.writer.release_output(root)

    def _generate(self, root: str, shards: list[int], indices: list[int]) -> dict:
        sink = ShardSink(self.writer, root, shards, self.num_rows, self.stages,
                         max_queue=4 * self.backend.batch_size + 8, max_failure_rate=self.max_failure_rate,
                         failure_rate_min_samples=self.failure_rate_min_samples).start()
        timings: dict[str, float] = collections.defaultdict(float)
        busy, busy_steady, batch, start = 0.0, 0.0, [], time.perf_counter()
        # The backend's first call once the workers run: before it, the pipeline was starting and filling.
        first_call: list[float] = []
        worker_cfg = dict(source=self.source_cfg, body_model=self.body_model_cfg, pipeline=self.pipeline_cfg,
                          seed=self.seed)
        shard_size = self.writer.shard_size
        n = self.candidates_per_sample
        stream = PreparedStream(self.preparer, worker_cfg, self.num_workers, imports=self.custom_imports,
                                warm_start=self.warm_start,
                                describe=lambda chunk: f'source indices {chunk} (shard {chunk[0] * n // shard_size})')
        wanted = set(indices)
        bar = tqdm(total=len(indices), unit='img', desc='generate', disable=not self.progress, smoothing=0.1)

        def flush() -> None:
            nonlocal busy, busy_steady
            t = time.perf_counter()
            steady_phase = stream.workers_ready_at is not None and t >= stream.workers_ready_at
            if steady_phase and not first_call:
                first_call.append(t)
            try:
                images = self.backend.generate(batch)
            except Exception as err:
                raise GenerationError(f'backend {type(self.backend).__name__} failed on samples '
                                      f'{[r["id"] for r in batch][:4]}: {type(err).__name__}: {err}') from err
            busy += time.perf_counter() - t
            if steady_phase:
                busy_steady += time.perf_counter() - t
            if len(images) != len(batch):
                raise GenerationError(f'backend {type(self.backend).__name__} returned {len(images)} images for '
                                      f'{len(batch)} samples')
            for results, img in zip(batch, images):
                img = np.asarray(img)
                want = (int(results['sample'].img_size[1]), int(results['sample'].img_size[0]), 3)
                if img.shape != want or img.dtype != np.uint8:
                    message = f'image {img.shape} {img.dtype}, expected {want} uint8'
                    sink.put(results['index'], StepOutcome('fail', results, 'backend', 'backend:bad_image', message))
                else:
                    results.update(img=img, backend=self.backend.name)
                    sink.put(results['index'], StepOutcome('ok', results))
            bar.update(len(batch))
            bar.set_postfix(backend_busy=f'{busy / max(time.perf_counter() - start, 1e-9):.0%}', refresh=False)
            batch.clear()

        try:
            with stream:  # workers start up while the backend loads its weights
                self.backend.setup()
                for pose_outcome in stream(sorted({i // n for i in indices})):
                    for name, seconds in (pose_outcome.timings or {}).items():
                        timings[name] += seconds
                    for index, outcome in self._candidates(pose_outcome, wanted):
                        if outcome.status != 'ok':
                            sink.put(index, outcome)
                            bar.update(1)
                            continue
                        batch.append(outcome.results)
                        if len(batch) == self.backend.batch_size:
                            flush()
                if batch:
                    flush()
            sink.close()
        except (BodyModelFileError, WorkerError) as err:
            bar.close()
            sink.cancel()
            raise GenerationError(f'{type(err).__name__}: {err}. Complete shards are kept; the same command resumes '
                                  'after the cause is fixed.') from err
        except BaseException:
            bar.close()
            sink.cancel()
            raise
        bar.close()
        end = time.perf_counter()
        wall = end - start
        steady = end - first_call[0] if first_call else 0.0
        for name, seconds in sink.stats.timings.items():
            timings[name] += seconds
        timings['backend'] += busy
        return dict(sink.counts, dropped_by_reason=dict(sink.stats.dropped), failed_by_reason=dict(sink.stats.failed),
                    wall_s=wall, steady_wall_s=steady, backend_busy_s=busy, backend_busy_steady_s=busy_steady,
                    timings_s=dict(timings), shards_committed=len(sink.committed))

    def _summary(self, root: str, manifest: dict, per_rank: list[dict]) -> dict:
        """Dataset totals (from every committed shard) plus this run's throughput and timings."""
        dropped, failed = collections.Counter(), collections.Counter()
        for entry in manifest.get('shards', []):
            with open(osp.join(root, SHARDS_DIR, entry['name'], SHARD_INFO)) as f:
                info = json.load(f)
            dropped.update(d['reason'] for d in info['dropped'])
            failed.update(d['reason'].split(': ', 1)[0] for d in info['failed'])
        run_written = sum(r['written'] for r in per_rank)
        wall = max(r['wall_s'] for r in per_rank)
        steady = max(r['steady_wall_s'] for r in per_rank)
        busy = sum(r['backend_busy_s'] for r in per_rank)
        busy_steady = sum(r['backend_busy_steady_s'] for r in per_rank)
        timings = collections.Counter()
        for r in per_rank:
            timings.update(r['timings_s'])
        handled = sum(r['written'] + r['dropped'] + r['failed'] for r in per_rank)
        return dict(
            out_dir=root, status=manifest['status'], num_samples=self.num_rows,
            written=manifest['counts']['written'],
            dropped=dict(dropped), failed=dict(failed), shards=len(manifest.get('shards', [])),
            shards_total=self.writer.num_shards(self.num_rows), world_size=len(per_rank),
            this_run=dict(written=run_written, dropped=sum(r['dropped'] for r in per_rank),
                          failed=sum(r['failed'] for r in per_rank),
                          shards_skipped_complete=sum(r['shards_skipped_complete'] for r in per_rank),
                          wall_s=round(wall, 3), images_per_s=round(run_written / wall, 3) if wall else 0.0,
                          backend_busy_s=round(busy, 3),
                          backend_busy_fraction=round(busy / (wall * len(per_rank)), 4) if wall else 0.0,
                          steady_wall_s=round(steady, 3), backend_busy_steady_s=round(busy_steady, 3),
                          backend_busy_fraction_steady=round(busy_steady / (steady * len(per_rank)), 4)
                          if steady else 0.0),
            timings_s={k: round(v, 4) for k, v in sorted(timings.items())},
            timings_ms_per_sample={k: round(1000 * v / max(handled, 1), 3) for k, v in sorted(timings.items())},
            backend=self.backend.name, **({} if self.candidates_per_sample == 1 else dict(
                candidates_per_sample=self.candidates_per_sample, num_source_samples=self.num_samples)))

    def _candidates(self, outcome: StepOutcome, wanted: set[int]) -> list[tuple[int, StepOutcome]]:
        """The rows of one prepared source index: its ``candidates_per_sample`` candidates this run writes.

        An ``'ok'`` pose gives each candidate its own results dict (the sample copied under the candidate's id, its
        own seed and ``scores``; the controls and prompt shared); a dropped or failed pose drops or fails each one.
        """
        n = self.candidates_per_sample
        if n == 1:
            return [(outcome.results['index'], outcome)]
        pose_index = int(outcome.results['index'])
        pose_id = str(outcome.results.get('id', f'<index {pose_index}>'))
        rows = []
        for j in range(n):
            index = pose_index * n + j
            if index not in wanted:
                continue
            results = dict(outcome.results, index=index, group=pose_id, candidate=j)
            if outcome.status == 'ok':
                cid = candidate_id(pose_id, j)
                sample = results['sample'].copy()
                sample.id = cid
                sample.meta.update(group=pose_id, candidate=j)
                results.update(id=cid, sample=sample, seed=stable_seed(self.seed, cid),
                               scores=dict(results.get('scores') or {}))
            rows.append((index, outcome._replace(results=results)))
        return rows

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_samples={self.num_samples}, seed={self.seed}, '
                f'pipeline={self.preparer.runner.names[1:]}, backend={self.backend!r}, writer={self.writer!r})')

