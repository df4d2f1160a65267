"""Shared contract test suites: every registered backend, renderer and pose source passes the same tests.

As diffusers' ``PipelineTesterMixin``: a test module subclasses a contract class and provides its fixtures; a new
component is tested by adding one case (a config) to the module's list, and ``missing_cases`` makes a test fail
when a registered component has no case. The suites use only the components' public API.

- :class:`BackendContract` (fixtures ``backend``: a set-up backend with ``batch_size >= 4``; ``results_batch``: 4
  per-sample results dicts from the generator's own transforms, :func:`prepared_results`; ``generator_inputs``:
  the ``prepared_results`` keyword arguments they came from, ``after_crop`` included where the backend needs steps
  such as ``LoadPhotoCrop``): images at the control size, determinism per seed,
  batch independence, seeds and controls matter, ``record()``, input errors, and a dataset written by the
  ``DatasetGenerator`` and read back (labels equal the source's, images the backend's, at the crop size).
- :class:`RendererContract` (fixtures ``renderer`` built with ``size=None``; ``body``: a posed body dict).
- :class:`SourceContract` (fixtures ``source`` and ``source_factory``: builds an equal, fresh source).
"""
from __future__ import annotations

import copy
import json
import pickle
from typing import Any, Callable, Iterable

import numpy as np
import pytest

from posedreamer_mm.body.sample import BodySample, validate_sample_id


def missing_cases(registry, base: type, cases: Iterable[str], package: str = 'posedreamer_mm.') -> list[str]:
    """Names registered in ``registry`` (subclasses of ``base`` defined in ``package``) with no case listed."""
    listed = {c.split('[')[0] for c in cases}
    names = [name for name, cls in registry.module_dict.items()
             if isinstance(cls, type) and issubclass(cls, base) and cls.__module__.startswith(package)]
    return sorted(set(names) - listed)


def generation_pipeline(controls: list[dict], size: int, after_crop: Iterable[dict] = ()) -> list[dict]:
    """The generator's default pre-backend pipeline at a ``size`` x ``size`` crop with these control renderers
    (and the steps ``after_crop`` right after the crop camera, e.g. ``LoadPhotoCrop`` for the photo backend)."""
    return [dict(type='BodyForward'), dict(type='BodyCropCamera', size=size, margin=0.1), *after_crop,
            dict(type='RenderControls', controls=list(controls)), dict(type='COCO17Visibility'),
            dict(type='SamplePrompt', prompts=dict(type='PromptSampler'))]


def prepared_results(source: dict, body_model: dict, controls: list[dict], size: int, num: int,
                     seed: int = 0, after_crop: Iterable[dict] = ()) -> list[dict]:
    """``num`` per-sample results dicts as the generator hands them to a backend (its own transforms).

    Args:
        source: ``POSE_SOURCES`` config.
        body_model: ``BODY_MODELS`` config.
        controls: renderer configs (no ``size``: the crop camera is ``size`` x ``size``).
        size: crop side, pixels.
        num: samples (the first ``num`` indices of the source that are not dropped).
        seed: global seed.
        after_crop: steps right after the crop camera (:func:`generation_pipeline`).
    """
    from posedreamer_mm.generation.preparer import SamplePreparer
    prep = SamplePreparer(source, body_model, generation_pipeline(controls, size, after_crop), seed=seed)
    out = []
    for index in range(len(prep.source)):
        prepared = prep(index)
        if prepared.status == 'ok':
            out.append(prepared.results)
        if len(out) == num:
            return out
    raise ValueError(f'the source gave only {len(out)} usable samples, {num} needed')


def _as_json(record: dict) -> str:
    return json.dumps(record, sort_keys=True)


class BackendContract:
    """Tests every generation backend must pass (``BaseGenerationBackend`` API, docs/conventions.md)."""

    #: Largest uint8 difference allowed between a sample generated in a batch of 4 and alone. 0 for exact
    #: backends; diffusion on CPU float32 differs by float rounding of batched kernels (< 1e-6), i.e. at most 1
    #: level where a value sits on a rounding boundary.
    batch_tolerance: int = 0
    #: False for a backend whose image does not depend on the sample's seed (the photo backend hands on the
    #: photo): its seed must then change nothing.
    seeded: bool = True

    def test_images_at_control_size(self, backend, results_batch):
        images = backend.generate(results_batch)
        assert len(images) == len(results_batch)
        w, h = (int(s) for s in results_batch[0]['sample'].img_size)
        for img, results in zip(images, results_batch):
            assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.shape == (h, w, 3)
            for ctype in backend.control_types:
                assert results['controls'][ctype].shape == img.shape
            assert img.std() > 0, 'a constant image'

    def test_deterministic_per_seed(self, backend, results_batch):
        first, second = backend.generate(results_batch), backend.generate(results_batch)
        for a, b in zip(first, second):
            np.testing.assert_array_equal(a, b)

    def test_batch_independence(self, backend, results_batch):
        """A sample generated in a batch of 4 equals the same sample (same id, seed) generated alone."""
        assert backend.batch_size >= len(results_batch) == 4
        in_batch = backend.generate(results_batch)
        for i in (0, 2):
            alone = backend.generate([results_batch[i]])[0]
            diff = np.abs(alone.astype(np.int64) - in_batch[i])
            assert diff.max() <= self.batch_tolerance, f'sample {i}: max difference {diff.max()}'
            assert diff.mean() < 0.05
        # and the batch's order does not matter either
        reversed_images = backend.generate(results_batch[::-1])[::-1]
        for a, b in zip(in_batch, reversed_images):
            assert np.abs(a.astype(np.int64) - b).max() <= self.batch_tolerance

    def test_seed_changes_image(self, backend, results_batch):
        results = dict(results_batch[0], seed=int(results_batch[0]['seed']) + 1)
        a, b = backend.generate([results_batch[0]])[0], backend.generate([results])[0]
        if not self.seeded:
            np.testing.assert_array_equal(a, b)
            return
        assert np.abs(a.astype(np.int64) - b).mean() > 1.0

    def test_controls_change_image(self, backend, results_batch):
        if not backend.control_types:
            pytest.skip(f'{type(backend).__name__} consumes no control images')
        results = copy.copy(results_batch[0])
        results['controls'] = {k: (255 - v) for k, v in results['controls'].items()}
        a, b = backend.generate([results_batch[0]])[0], backend.generate([results])[0]
        assert not np.array_equal(a, b), 'the control images have no effect'

    def test_record(self, backend):
        record = backend.record()
        _as_json(record)
        assert record['backend'] == backend.name and backend.name
        assert record['control_types'] == list(backend.control_types)

    def test_missing_control_or_geometry_names_it(self, backend, results_batch):
        results = dict(results_batch[0], controls={})  # what a backend with controls needs
        for key in ('vertices', 'faces', 'photo'):       # what the rendering baseline / the photo backend need
            results.pop(key, None)
        with pytest.raises(ValueError, match=str(results['sample'].id)):
            backend.generate([results])

    def test_dataset_round_trip(self, backend, generator_inputs, tmp_path):
        """The generator writes the backend's images with the source's labels; the reader gives both back."""
        from posedreamer_mm.generation import DatasetGenerator, GeneratedDataReader
        from posedreamer_mm.registry import POSE_SOURCES
        inputs = dict(generator_inputs)
        num, size = 3, inputs.pop('size')
        DatasetGenerator(source=inputs['source'], body_model=inputs['body_model'], seed=inputs['seed'],
                         pipeline=generation_pipeline(inputs['controls'], size, inputs.get('after_crop', ())),
                         backend=backend, num_samples=num, writer=dict(shard_size=2, image_format='png'),
                         progress=False).run(str(tmp_path / 'out'))
        reader = GeneratedDataReader(tmp_path / 'out')
        source = POSE_SOURCES.build(inputs['source'])
        expected = prepared_results(**dict(generator_inputs, num=num))
        assert reader.ids == [source[i].id for i in range(num)] == [r['id'] for r in expected]
        for i, results in enumerate(expected):
            label, meta = reader.sample(i), reader.meta(i)
            for key in ('betas', 'global_orient', 'body_pose', 'transl'):
                np.testing.assert_array_equal(getattr(label, key), getattr(source[i], key), err_msg=key)
            np.testing.assert_allclose(label.focal, results['sample'].focal, rtol=1e-6)
            assert tuple(label.img_size) == (size, size)
            assert meta['backend'] == backend.name and meta['seed'] == results['seed']
            img = reader.load_image(i)
            assert img.shape == (size, size, 3)
            alone = backend.generate([results])[0]
            assert np.abs(img.astype(np.int64) - alone).max() <= self.batch_tolerance

    def test_batch_larger_than_batch_size(self, backend, results_batch):
        with pytest.raises(ValueError, match='batch_size'):
            backend.generate(list(results_batch) * (backend.batch_size // len(results_batch) + 1))

    def test_mixed_sizes_refused(self, backend, results_batch):
        small = copy.copy(results_batch[1])
        sample = small['sample'].copy()
        sample.img_size = np.asarray(sample.img_size) // 2
        small['sample'] = sample
        small['controls'] = {k: np.ascontiguousarray(v[::2, ::2]) for k, v in small['controls'].items()}
        with pytest.raises(ValueError, match='size'):
            backend.generate([results_batch[0], small])


class RendererContract:
    """Tests every control renderer must pass (``render()`` / ``__call__`` public API only)."""

    def test_render_keys_and_image(self, renderer, body):
        out = renderer.render(**body)
        w, h = (int(s) for s in body['img_size'])
        assert out['image'].shape == (h, w, 3) and out['image'].dtype == np.uint8
        assert out['image'].std() > 0, 'nothing drawn'
        assert out['control_type'] == type(renderer).control_type and out['control_type']
        np.testing.assert_array_equal(out['img_size'], [w, h])
        np.testing.assert_allclose(out['focal'], body['focal'])
        assert out['joints_2d'].shape == (len(body['joints']), 2)

    def test_call_is_render_image_and_deterministic(self, renderer, body):
        np.testing.assert_array_equal(renderer(**body), renderer.render(**body)['image'])

    def test_pickle_round_trip(self, renderer, body):
        """Spawn workers receive pickled renderers: the copy renders the same image."""
        copy_ = pickle.loads(pickle.dumps(renderer))
        np.testing.assert_array_equal(copy_(**body), renderer(**body))

    def test_batched_vertices_refused(self, renderer, body):
        with pytest.raises(ValueError, match='one body'):
            renderer.render(**dict(body, vertices=np.stack([body['vertices']] * 2)))


class SourceContract:
    """Tests every pose source must pass (``len``, indexing, iteration, stable valid ids)."""

    def test_len_iteration_and_indexing_agree(self, source):
        samples = list(source)
        assert len(samples) == len(source) > 0
        for i in (0, len(source) - 1):
            assert source[i].id == samples[i].id
            np.testing.assert_array_equal(source[i].body_pose, samples[i].body_pose)
        with pytest.raises(IndexError):
            source[len(source)]

    def test_ids_valid_and_unique(self, source):
        ids = [s.id for s in source]
        assert all(validate_sample_id(i) == i for i in ids)
        assert len(set(ids)) == len(ids)

    def test_samples_valid(self, source):
        for sample in source:
            assert isinstance(sample, BodySample)
            sample.validate()

    def test_stable_across_builds(self, source, source_factory: Callable[[], Any]):
        again = source_factory()
        assert [s.id for s in again] == [s.id for s in source]
        for a, b in zip(source, again):
            np.testing.assert_array_equal(a.full_pose(), b.full_pose())
            np.testing.assert_array_equal(a.transl, b.transl)
