"""This project's generated data (``tools/generate.py`` output) as an HMR dataset.

Read through :class:`~posedreamer_mm.generation.reader.GeneratedDataReader` (format: docs/dataset_format.md;
API: docs/conventions.md): each row's :class:`~posedreamer_mm.body.sample.BodySample` is the label of its image
(crop-frame camera, SMPL-X in that camera's frame, derived keypoints, box and 3D joints), so the image *is* the
"full image" of the HMR convention.

``tools/filter.py`` (``posedreamer_mm/apis/filter.py``) scores a dataset without changing it and writes
``manifest_filtered.jsonl`` (the kept rows) and ``scores.jsonl`` (every row's scores); the dataset reads both
(``filtered_manifest=``, ``scores=``; docs/hmr_data.md).
"""
from __future__ import annotations

import logging
import os
import os.path as osp

import numpy as np
from mmengine.logging import print_log

from posedreamer_mm.generation.reader import GeneratedDataReader
from posedreamer_mm.registry import DATASETS
from posedreamer_mm.utils.fileio import read_id_records

from .hmr_base import HMRBaseDataset, data_info_from_sample


@DATASETS.register_module()
class GeneratedHMRDataset(HMRBaseDataset):
    """Rows of a generated dataset (only committed shards are visible), optionally only those a filter kept.

    Labels are read lazily per item from the memory-mapped shard labels (the data list holds only row numbers,
    so a million-row dataset starts in seconds and workers share nothing large). A row whose label cannot be
    turned into a sample (no box and no keypoints) raises in test mode and is dropped (mmengine draws another
    index) and counted in ``num_bad_labels`` in training. ``data_info['scores']`` carries the scores the
    generator's filters wrote, updated with ``scores=``'s, for the filter transforms.

    Args:
        data_root: The generator's output directory (with ``manifest.json``).
        filtered_manifest: ``manifest_filtered.jsonl`` of ``tools/filter.py`` (one ``{"id", "index", "image"}``
            object per kept sample; a path relative to ``data_root`` or absolute, e.g.
            ``'filter/manifest_filtered.jsonl'``): only the samples it lists are items, in dataset row order.
            Samples are found by ``id``; ``image``, when given, must be that sample's image.
        scores: ``scores.jsonl`` of ``tools/filter.py`` (one object per scored sample with ``id`` and a
            ``scores`` dict of floats; rows it could not read carry ``error`` and no scores; path as above). Its
            scores replace the generator's scores of the same name in ``data_info['scores']``, so
            ``FilterByOKS`` / ``FilterByPersonCount`` / ``FilterByHeadPose`` in ``pipeline`` threshold them.
            Rows it lacks keep the generator's scores (counted in :attr:`num_unscored`, one WARNING).
        **kwargs: :class:`~posedreamer_mm.datasets.hmr_base.HMRBaseDataset` arguments (``dataset_name`` defaults
            to ``'generated'``).

    Raises:
        FileNotFoundError: ``data_root``, ``filtered_manifest`` or ``scores`` does not exist (named).
        ValueError: naming the file: a corrupt line, a repeated id, ids not in the dataset (a manifest of another
            dataset), a manifest keeping no sample, or a manifest ``image`` that is not its sample's.
    """
    default_name = 'generated'
    lazy = True
    locator_key = 'row'

    def __init__(self, data_root: str = '', filtered_manifest: str | os.PathLike | None = None,
                 scores: str | os.PathLike | None = None, **kwargs):
        if not osp.isdir(data_root):
            raise FileNotFoundError(f'GeneratedHMRDataset: data_root {data_root!r} is not a directory (expected the '
                                    'output directory of tools/generate.py, with manifest.json)')
        self.reader = GeneratedDataReader(data_root)
        self.filtered_manifest = self._filter_file(filtered_manifest, 'filtered_manifest', 'manifest_filtered.jsonl')
        self.scores_file = self._filter_file(scores, 'scores', 'scores.jsonl')
        #: score name -> (values (N,) float64, present (N,) bool) over all N dataset rows, from ``scores=``.
        self.score_columns: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.num_unscored = 0
        super().__init__(data_root=data_root, **kwargs)

    def _filter_file(self, path: str | os.PathLike | None, arg: str, name: str) -> str | None:
        """``path`` resolved against the data root; ``FileNotFoundError`` naming it if it is no file."""
        if path is None:
            return None
        path = os.fspath(path)
        full = path if osp.isabs(path) else osp.join(self.reader.root, path)
        if not osp.isfile(full):
            raise FileNotFoundError(f'GeneratedHMRDataset: {arg}={path!r}: {full} is missing or not a file (expected '
                                    f'the {name} that tools/filter.py writes, by default to '
                                    f'<data_root>/filter/{name}; relative paths are relative to data_root)')
        return full

    def _rows(self, records: list[tuple[int, dict]], path: str, what: str) -> list[int]:
        """Dataset rows of the records' ids; ``ValueError`` naming ``path`` and the unknown ids."""
        rows, unknown = [], []
        for n, rec in records:
            try:
                rows.append(self.reader.index_of(rec['id']))
            except KeyError:
                unknown.append(f'{rec["id"]!r} (line {n})')
        if unknown:
            more = f' and {len(unknown) - 5} more' if len(unknown) > 5 else ''
            raise ValueError(f'GeneratedHMRDataset: {what} {path} lists {len(unknown)} sample id(s) that are not in '
                             f'{self.reader.root} ({len(self.reader)} committed samples): '
                             f'{", ".join(unknown[:5])}{more}; was it written for another dataset?')
        return rows

    def _load_kept_rows(self) -> list[int]:
        records = read_id_records(self.filtered_manifest, prefix='GeneratedHMRDataset: filtered_manifest ')
        rows = self._rows(records, self.filtered_manifest, 'filtered_manifest')
        for (n, rec), row in zip(records, rows):
            image = self.reader.meta(row)['image']
            if 'image' in rec and rec['image'] != image:
                raise ValueError(f'GeneratedHMRDataset: filtered_manifest {self.filtered_manifest} line {n}: sample '
                                 f'{rec["id"]!r} has image {rec["image"]!r}, but the dataset stores {image!r} '
                                 '(a manifest of another dataset with the same ids?)')
        if not rows:
            raise ValueError(f'GeneratedHMRDataset: filtered_manifest {self.filtered_manifest} keeps no samples '
                             '(every sample was dropped or unreadable; see scores.jsonl and summary.json beside it)')
        return sorted(rows)

    def _load_score_columns(self, rows_used: list[int]) -> None:
        """Fills :attr:`score_columns` from the ``scores.jsonl`` records and counts the used rows without one."""
        records = read_id_records(self.scores_file, prefix='GeneratedHMRDataset: scores ')
        rows = self._rows(records, self.scores_file, 'scores')
        n_rows = len(self.reader)
        scored = np.zeros(n_rows, bool)
        columns = self.score_columns
        for (n, rec), row in zip(records, rows):
            values = rec.get('scores')
            if values is None and 'error' in rec:
                continue   # unreadable when scored: no scores
            if not isinstance(values, dict) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()):
                raise ValueError(f'GeneratedHMRDataset: scores {self.scores_file} line {n} (sample {rec["id"]!r}): '
                                 f'expected "scores": {{name: number}}, got {str(values)[:120]}')
            scored[row] = True
            for key, value in values.items():
                if key not in columns:
                    columns[key] = (np.full(n_rows, np.nan), np.zeros(n_rows, bool))
                columns[key][0][row] = value
                columns[key][1][row] = True
        self.num_unscored = int((~scored[rows_used]).sum())
        if self.num_unscored:
            print_log(f'GeneratedHMRDataset ({self.dataset_name}): {self.num_unscored} of {len(rows_used)} samples '
                      f'have no scores in {self.scores_file} (scored with --max-samples, unreadable then, or added '
                      "since); they keep the generator's scores", logger='current', level=logging.WARNING)

    def load_data_list(self) -> list[dict]:
        if len(self.reader) == 0:
            raise ValueError(f'GeneratedHMRDataset: {self.reader.root} has no committed samples yet')
        rows = self._load_kept_rows() if self.filtered_manifest else list(range(len(self.reader)))
        if self.scores_file:
            self._load_score_columns(rows)
        return [dict(row=i) for i in rows]

    def ids_of_locators(self, locators: np.ndarray) -> list[str]:
        """Sample ids of rows ``locators`` from the dataset's index of rows: no label is decoded
        (:meth:`~posedreamer_mm.datasets.hmr_base.HMRBaseDataset.sample_ids`, what ``HardSampleSampler`` reads a
        difficulty file by)."""
        ids = self.reader.ids
        return [ids[r] for r in locators.tolist()]

    def paths_of_locators(self, locators: np.ndarray) -> list[str]:
        """Image paths of rows ``locators`` from the index of rows (no label decoded)."""
        return [self.reader.image_path(r) for r in locators.tolist()]

    def build_data_info(self, entry: dict) -> dict:
        row = entry['row']
        info = data_info_from_sample(self.reader.sample(row), self.reader.image_path(row), self.dataset_name)
        scores = dict(self.reader.meta(row).get('scores', {}))
        for key, (values, present) in self.score_columns.items():
            if present[row]:
                scores[key] = float(values[row])
        info.update(row=row, scores=scores)
        return info
