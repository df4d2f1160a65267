"""How long ``HardSampleSampler`` takes to map a difficulty file's ids onto the training set, per-item vs listed ids.

The sampler needs the sample id of every item once, when it is built with ``difficulty_file=``. Two ways:

- **per item** (the only way before, and still the way for a dataset without ``sample_ids()``):
  ``get_data_info(i)['id']`` for every index; a lazy dataset (``GeneratedHMRDataset``, BEDLAM) decodes every
  label for it;
- **listed**: the dataset's ``sample_ids()`` (``HMRBaseDataset``: docs/hmr_data.md, "Listing ids and photos
  without building items").

Measured on (1) a real ``GeneratedHMRDataset`` of ``--rows`` rows written with the generator's writer (tiny images,
full labels), and (2) ``--synthetic`` items of an eager, serialised ``HMRBaseDataset`` with HMR-sized
``data_info`` dicts (what ``get_data_info`` unpickles per item) with and without ``sample_ids()``. Each figure is
the whole sampler construction with a difficulty file covering every second item; both ways must give the same
table.
Then (3) a BEDLAM label file of ``--bedlam`` rows (random fits, 127 projected keypoints, BEDLAM's keys) through
``BEDLAMHMRDataset``, per item vs its ``sample_ids()`` from the label tables.

Last, the start-up of ``HMRPhotoSource`` over the generated and the BEDLAM dataset: every item's photo path, per
item (``get_data_info``, what the source read before, building every label) vs the dataset's ``image_paths()``
(from the tables; labels are built when a sample is asked for); both must give the same people per photo.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sampler_lookup.py [--rows 5000] [--synthetic 100000] \
        [--bedlam 100000]
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from posedreamer_mm.body.sample import BodySample  # noqa: E402
from posedreamer_mm.datasets.bedlam import BEDLAMHMRDataset  # noqa: E402
from posedreamer_mm.datasets.generated import GeneratedHMRDataset  # noqa: E402
from posedreamer_mm.datasets.hmr_base import HMRBaseDataset  # noqa: E402
from posedreamer_mm.datasets.samplers.hard_sample_sampler import HardSampleSampler  # noqa: E402
from posedreamer_mm.generation.writer import ShardedDatasetWriter  # noqa: E402
from posedreamer_mm.registry import DATASETS  # noqa: E402


def write_generated(root: str, rows: int, size: int = 16) -> None:
    """``rows`` labelled samples (random SMPL-X, camera, COCO-17 keypoints, box) with tiny PNG images."""
    rng = np.random.default_rng(0)
    writer = ShardedDatasetWriter(shard_size=1000, image_format='png', save_controls=False)
    writer.prepare_output(root, dict(fingerprint='bench-sampler-lookup', config={}, num_samples=rows))
    img = np.zeros((size, size, 3), np.uint8)
    for shard in range(writer.num_shards(rows)):
        builder = writer.open_shard(root, shard, rows)
        for i in builder.indices:
            kpts = np.concatenate([rng.uniform(2, size - 2, (17, 2)), np.full((17, 1), 2.0)], 1)
            sample = BodySample(id=f'gen_{i:07d}', body_pose=rng.normal(0, 0.2, 63), betas=rng.normal(0, 1, 10),
                                transl=np.array([0, 0, 3.0]), focal=np.array([20.0, 20.0]),
                                princpt=np.array([size / 2, size / 2]), img_size=np.array([size, size]),
                                keypoints_coco17=kpts, bbox=np.array([1.0, 1.0, size - 2.0, size - 2.0]))
            builder.add(i, dict(sample=sample, img=img, seed=i, prompt=''))
        builder.commit()
    writer.finalize(root, rows)


def write_bedlam(root: str, rows: int, per_image: int = 4) -> None:
    """One BEDLAM label file of ``rows`` rows (``per_image`` people per image) with the keys the dataset reads."""
    rng = np.random.default_rng(0)
    os.makedirs(root, exist_ok=True)
    cam_int = np.tile(np.array([[1000.0, 0, 640], [0, 1000.0, 360], [0, 0, 1]], np.float32), (rows, 1, 1))
    gtkps = np.concatenate([rng.uniform(100, 600, (rows, 127, 2)), np.ones((rows, 127, 1))], 2).astype(np.float32)
    np.savez(osp.join(root, 'scene0.npz'),
             imgname=np.array([f'seq_{i // per_image:06d}/seq_{i // per_image:06d}_0000.png' for i in range(rows)]),
             pose_cam=rng.normal(0, 0.2, (rows, 165)).astype(np.float32),
             shape=rng.normal(0, 1, (rows, 11)).astype(np.float32),
             trans_cam=np.tile(np.array([0, 0, 5.0], np.float32), (rows, 1)), cam_int=cam_int, gtkps=gtkps)


class PerItemGenerated(GeneratedHMRDataset):
    """The same dataset without ``sample_ids()``/``image_paths()``: readers build each item's ``data_info``."""
    sample_ids = None
    image_paths = None


class PerItemBEDLAM(BEDLAMHMRDataset):
    sample_ids = None
    image_paths = None


@DATASETS.register_module(force=True)
class HMRSized(HMRBaseDataset):
    """``n`` eager, serialised items shaped like the HMR datasets' ``data_info`` (SMPL-X, keypoints, camera), with
    the base's ``sample_ids()`` and ``image_paths()`` (ids and paths kept beside the serialized list)."""

    def __init__(self, n: int, per_image: int = 4, **kwargs):
        self.n, self.per_image = n, per_image
        kwargs.setdefault('pipeline', [])
        super().__init__(**kwargs)

    def load_data_list(self):
        rng = np.random.default_rng(0)
        smplx = {k: rng.normal(0, 1, d).astype(np.float32) for k, d in
                 (('global_orient', 3), ('body_pose', 63), ('betas', 10), ('transl', 3), ('left_hand_pose', 45),
                  ('right_hand_pose', 45), ('jaw_pose', 3), ('expression', 10))}
        return [dict(id=f'item_{i:07d}', img_path=f'/data/images/{i // 1000:04d}/{i // self.per_image:07d}.jpg',
                     smplx=smplx, keypoints_coco17=rng.random((17, 3), dtype=np.float32),
                     bbox=np.arange(4, dtype=np.float32), focal=np.ones(2, np.float32),
                     princpt=np.ones(2, np.float32), dataset_name='hmr')
                for i in range(self.n)]


class PerItemHMRSized(HMRSized):
    sample_ids = None
    image_paths = None


def timed_sampler(dataset, difficulty_file: str) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    sampler = HardSampleSampler(dataset, seed=0, difficulty_file=difficulty_file)
    return time.perf_counter() - start, sampler.difficulty


def write_difficulty(path: str, ids: list[str]) -> None:
    chosen = ids[::2]
    np.savez(path, ids=np.array(chosen), difficulty=np.arange(len(chosen), dtype=np.float64))


def compare(name: str, slow, fast, work: str, n: int) -> None:
    ids = [f'{i}' for i in fast.sample_ids()]
    path = osp.join(work, f'{name}.npz')
    write_difficulty(path, ids)
    t_slow, d_slow = timed_sampler(slow, path)
    t_fast, d_fast = timed_sampler(fast, path)
    np.testing.assert_array_equal(d_slow, d_fast)
    print(f'{name}: {n} items; per item {t_slow:.3f} s ({1e5 * t_slow / n:.2f} s per 100k), listed {t_fast:.3f} s '
          f'({1e5 * t_fast / n:.2f} s per 100k); {t_slow / t_fast:.0f}x')


def photo_start(name: str, dataset_cls, kwargs: dict) -> None:
    """``HMRPhotoSource`` construction (dataset build included) with per-item paths vs listed paths."""
    from posedreamer_mm.generation.photo_pairs import HMRPhotoSource
    per_item = type(f'PerItem{dataset_cls.__name__}Photo', (dataset_cls,), dict(image_paths=None))
    DATASETS.register_module(module=per_item, force=True)
    took, groups = {}, {}
    for label, cls in (('per item', per_item), ('listed', dataset_cls)):
        start = time.perf_counter()
        source = HMRPhotoSource(dict(type=cls.__name__, **kwargs))
        took[label] = time.perf_counter() - start
        groups[label] = sorted(map(tuple, source._by_photo.values()))
    assert groups['per item'] == groups['listed'], 'the two ways group people differently'
    n = len(source)
    print(f'HMRPhotoSource start over {name}: {n} items; per item {took["per item"]:.2f} s '
          f'({1e5 * took["per item"] / n:.1f} s per 100k), listed {took["listed"]:.2f} s '
          f'({1e5 * took["listed"] / n:.2f} s per 100k); {took["per item"] / took["listed"]:.0f}x (per process: '
          'the main one and every worker)')


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rows', type=int, default=5000, help='rows of the generated dataset')
    parser.add_argument('--synthetic', type=int, default=100_000, help='items of the synthetic eager dataset')
    parser.add_argument('--bedlam', type=int, default=100_000, help='rows of the BEDLAM label file')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        root = osp.join(work, 'generated')
        start = time.perf_counter()
        write_generated(root, args.rows)
        print(f'wrote {args.rows} generated rows in {time.perf_counter() - start:.1f} s')
        compare('GeneratedHMRDataset', PerItemGenerated(data_root=root, pipeline=[]),
                GeneratedHMRDataset(data_root=root, pipeline=[]), work, args.rows)
        eager = HMRSized(args.synthetic)
        compare('eager serialised HMR dataset', PerItemHMRSized(args.synthetic), eager, work, args.synthetic)
        kept = sum(v.nbytes for v in eager._keys.values())
        print(f'  (its ids and paths kept beside the list: {kept / 1e6:.1f} MB, the serialized list '
              f'{eager.data_bytes.nbytes / 1e6:.1f} MB)')
        bedlam = osp.join(work, 'bedlam')
        write_bedlam(bedlam, args.bedlam)
        compare('BEDLAMHMRDataset', PerItemBEDLAM(label_root=bedlam, pipeline=[]),
                BEDLAMHMRDataset(label_root=bedlam, pipeline=[]), work, args.bedlam)
        photo_start('generated', GeneratedHMRDataset, dict(data_root=root))
        photo_start('BEDLAM', BEDLAMHMRDataset, dict(label_root=bedlam))
        photo_start('the eager serialised HMR dataset', HMRSized, dict(n=args.synthetic))
    print(f'(one process, OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")}, CPU time '
          f'{time.process_time():.1f} s)')


if __name__ == '__main__':
    main()
