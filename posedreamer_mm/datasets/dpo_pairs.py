"""DPO preference pairs (winner, loser, shared controls, caption) read from a pairs file and its candidates dataset.

``tools/make_dpo_pairs.py`` writes the pairs file: one JSON object per line whose ``winner.image``,
``loser.image`` and ``controls`` are paths relative to the candidates dataset (docs/dpo_pairs.md, "Pairs file").

::

    dataset = DATASETS.build(dict(type='DPOPairDataset', data_root='data/candidates', ann_file='dpo_pairs.jsonl',
                                  control_types=['pncc'],
                                  pipeline=[dict(type='LoadDPOPair'), dict(type='PackDPOPair')]))
    dataset[0]  # {'inputs': {'image_w': uint8 (3, H, W), 'image_l': uint8 (3, H, W), 'control': uint8 (3k, H, W)},
                #  'data_samples': {'prompt': str, 'sample_id': str}}
"""
from __future__ import annotations

import copy
import json
import os.path as osp
from collections.abc import Mapping, Sequence

from mmengine.dataset import BaseDataset

from posedreamer_mm.generation.reader import DatasetIntegrityError
from posedreamer_mm.registry import DATASETS
from posedreamer_mm.utils.fileio import safe_join


class PairsFileError(DatasetIntegrityError):
    """A candidates dataset, scores file or pairs file that cannot be used (the message names the file and line)."""


@DATASETS.register_module()
class DPOPairDataset(BaseDataset):
    """The lines of a DPO pairs file as training samples (contract: docs/dpo_pairs.md, "Training sample").

    ``data_info`` per pair: ``img_path`` (the winner), ``img_l_path`` (the loser), ``control_paths`` (one per
    requested control type, in ``control_types`` order), ``control_types``, ``prompt``, ``sample_id`` (the group,
    i.e. the pose id), ``winner_id``, ``loser_id``, ``gap``, ``line``. The pipeline reads the files
    (:class:`~posedreamer_mm.datasets.transforms.dpo_pair_transforms.LoadDPOPair`) and ends with
    :class:`~posedreamer_mm.datasets.transforms.dpo_pair_transforms.PackDPOPair`.

    Args:
        data_root: The candidates dataset (generator output with ``candidates_per_sample``); the pairs' paths are
            relative to it.
        ann_file: The pairs file (relative to ``data_root`` unless absolute).
        control_types: Controls to feed, by name, stacked along the channels in this order.
        **kwargs: :class:`mmengine.dataset.BaseDataset` arguments (``pipeline``, ``indices``...).

    Raises:
        FileNotFoundError: ``data_root`` is not a directory.
        PairsFileError: a line of the pairs file is no pair (not JSON, a key missing, ``controls`` no object,
            ``gap`` no number, winner and loser the same file), misses a requested control type, references a file
            that does not exist, or was made from another candidates dataset than ``data_root`` (its
            ``candidates_fingerprint`` is not the ``manifest.json`` fingerprint of ``data_root``): names the pairs
            file, the line and the key or path.
        ValueError: ``control_types`` is empty or repeats a type, or the pairs file holds no pair.
    """
    METAINFO = dict(dataset_name='dpo_pairs')

    def __init__(self, data_root: str = '', ann_file: str = 'dpo_pairs.jsonl', control_types: Sequence[str] = ('pncc',),
                 **kwargs) -> None:
        types = [control_types] if isinstance(control_types, str) else list(control_types)
        if not types or len(set(types)) != len(types):
            raise ValueError(f'DPOPairDataset: control_types must name each control once, got {types}')
        if not osp.isdir(data_root):
            raise FileNotFoundError(f'DPOPairDataset: data_root {data_root!r} is not a directory (expected the '
                                    'candidates dataset the pairs file refers to)')
        self.control_types = [str(t) for t in types]
        super().__init__(data_root=data_root, ann_file=ann_file, serialize_data=True, **kwargs)

    def _path(self, rel: object, where: str, key: str) -> str:
        if not isinstance(rel, str) or not rel:
            raise PairsFileError(f'{where}: "{key}" must be a path relative to {self.data_root}, got {rel!r}')
        try:
            path = safe_join(self.data_root, *rel.split('/'))
        except ValueError as err:
            raise PairsFileError(f'{where}: "{key}" {rel!r}: {err}') from None
        if not osp.isfile(path):
            raise PairsFileError(f'{where}: "{key}" {path} does not exist (the pairs file belongs to another '
                                 'candidates dataset, or the dataset was moved or damaged)')
        return path

    def _fingerprint(self) -> str | None:
        """The candidates dataset's config fingerprint (``manifest.json``), ``None`` when it has none."""
        try:
            with open(osp.join(self.data_root, 'manifest.json'), encoding='utf-8') as f:
                fingerprint = json.load(f).get('fingerprint')
        except (OSError, ValueError, AttributeError):
            return None
        return fingerprint if isinstance(fingerprint, str) else None

    def load_data_list(self) -> list[dict]:
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(f'DPOPairDataset: pairs file {self.ann_file} does not exist (write it with '
                                    'python tools/make_dpo_pairs.py CANDIDATES_DIR)')
        fingerprint = self._fingerprint()
        data_list = []
        with open(self.ann_file) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f'{self.ann_file}, line {n}'
                try:
                    pair = json.loads(line)
                except json.JSONDecodeError as err:
                    raise PairsFileError(f'{where}: not JSON ({err})') from None
                try:
                    winner, loser, controls = pair['winner'], pair['loser'], pair['controls']
                    w_image, l_image, group = winner['image'], loser['image'], pair['group']
                except (KeyError, TypeError) as err:
                    raise PairsFileError(f'{where}: no {err} key; expected a pair of tools/make_dpo_pairs.py '
                                         '(group, winner.image, loser.image, controls, prompt)') from None
                if not isinstance(controls, dict):
                    raise PairsFileError(f'{where}: "controls" is {controls!r}; expected an object (control type -> '
                                         'path)')
                made_from = pair.get('candidates_fingerprint')
                if made_from is not None and fingerprint is not None and made_from != fingerprint:
                    # two runs of one pose config share ids and paths: every file would be found
                    raise PairsFileError(f'{where}: the pair was made from candidates {made_from!r} but the '
                                         f'data_root {self.data_root} is {fingerprint!r} (manifest.json '
                                         'fingerprint): another candidates run of the same poses, whose images '
                                         'these OKS did not rank. Point data_root at the pairs\' own candidates')
                gap = pair.get('gap', float('nan'))
                if isinstance(gap, bool) or not isinstance(gap, (int, float)):
                    raise PairsFileError(f'{where}: "gap" is {gap!r}; expected a number (winner - loser OKS)')
                missing = [t for t in self.control_types if t not in controls]
                if missing:
                    raise PairsFileError(f'{where}: no {missing} control; the pair has {sorted(controls)}. Choose '
                                         'control_types among those')
                img_path = self._path(w_image, where, 'winner.image')
                img_l_path = self._path(l_image, where, 'loser.image')
                if img_path == img_l_path:
                    raise PairsFileError(f'{where}: winner.image and loser.image are the same file {img_path}; a '
                                         'pair compares two candidates')
                data_list.append(dict(
                    img_path=img_path, img_l_path=img_l_path, control_types=list(self.control_types),
                    control_paths=[self._path(controls[t], where, f'controls.{t}') for t in self.control_types],
                    prompt=str(pair.get('prompt') or ''), sample_id=str(group), winner_id=str(winner.get('id', '')),
                    loser_id=str(loser.get('id', '')), gap=float(gap), line=n))
        if not data_list:
            raise ValueError(f'DPOPairDataset: {self.ann_file} holds no pair (see its .report.json: groups by '
                             'reason)')
        return data_list


def _is_pair_dataset(dataset_type: object) -> bool:
    if isinstance(dataset_type, type):
        return issubclass(dataset_type, DPOPairDataset)
    return isinstance(dataset_type, str) and dataset_type.rsplit('.', 1)[-1] == 'DPOPairDataset'


def refreshed_dataset_cfg(dataset_cfg: Mapping, data_root: str, ann_file: str = 'dpo_pairs.jsonl',
                          mode: str = 'replace') -> dict:
    """The training dataset's config switched to another pairs file (``DPOControlHook``'s on-line refresh).

    ``mode='replace'``: ``dataset_cfg`` (a ``DPOPairDataset`` config) with ``data_root`` and ``ann_file`` set to the
    new pairs, its ``control_types`` and ``pipeline`` kept; ``'mix'``: mmengine's ``ConcatDataset`` of the original
    pairs (``dataset_cfg`` unchanged, first) and the new ones, so an epoch sees both.

    Raises:
        TypeError: ``dataset_cfg`` is not a ``DPOPairDataset`` config dict (a built dataset or another type cannot
            be pointed at a new pairs file).
        ValueError: ``mode`` is neither ``'replace'`` nor ``'mix'``.
    """
    if not isinstance(dataset_cfg, Mapping) or not _is_pair_dataset(dataset_cfg.get('type')):
        got = dataset_cfg.get('type') if isinstance(dataset_cfg, Mapping) else type(dataset_cfg).__name__
        raise TypeError(f'train_dataloader.dataset must be a DPOPairDataset config dict for the on-line pair '
                        f'refresh (its data_root and ann_file are replaced by each round\'s), got {got!r}')
    if mode not in ('replace', 'mix'):
        raise ValueError(f'mode must be "replace" or "mix", got {mode!r}')
    new = copy.deepcopy(dict(dataset_cfg))
    new.update(data_root=str(data_root), ann_file=str(ann_file))
    if mode == 'replace':
        return new
    return dict(type='mmengine.ConcatDataset', datasets=[copy.deepcopy(dict(dataset_cfg)), new])


__all__ = ['DPOPairDataset', 'PairsFileError', 'refreshed_dataset_cfg']
