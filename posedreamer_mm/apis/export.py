"""Export an existing generated dataset to formats other tools read (``tools/export_coco.py``).

``export_coco(dataset_dir)`` writes the COCO keypoints file of every committed sample
(``posedreamer_mm/generation/coco_export.py``: keypoints, clipped box, the silhouette's RLE and area) so an mmpose
config can add the generated data with ``dict(type='CocoDataset', data_root=dataset_dir, ann_file=...,
data_prefix=dict(img=''))``. The dataset is only read.
"""
from __future__ import annotations

import os
import os.path as osp

#: The export's default file name, inside the dataset directory (as tools/demo.py writes it).
COCO_FILE = 'coco_keypoints.json'


def export_coco(dataset_dir: str | os.PathLike, out_file: str | os.PathLike | None = None,
                body_model_dir: str | os.PathLike | None = None) -> dict:
    """Writes the COCO keypoints json of a generated dataset.

    Args:
        dataset_dir: The directory ``tools/generate.py`` wrote (with ``manifest.json``).
        out_file: The json to write (atomically); default ``<dataset_dir>/coco_keypoints.json``.
        body_model_dir: The SMPL-X model directory the silhouettes are rendered with, when the one the manifest
            records (``config.body_model.model_path``) is not at that path on this machine; ``None`` keeps the
            manifest's.

    Returns:
        ``out_file``, ``num_images``, ``num_annotations``, ``body_model`` (the config used).

    Raises:
        posedreamer_mm.generation.writer.OutputConflictError: ``dataset_dir`` is not a generated dataset.
        KeyError: the manifest records no body model and none is given.
        FileNotFoundError: ``body_model_dir`` does not exist.
    """
    import json

    from posedreamer_mm.generation.coco_export import export_coco_keypoints, manifest_body_model
    from posedreamer_mm.generation.reader import GeneratedDataReader
    reader = GeneratedDataReader(dataset_dir)
    if body_model_dir is not None:
        if not osp.isdir(body_model_dir):
            raise FileNotFoundError(f'--body-model-dir {os.fspath(body_model_dir)} is not a directory (expected the '
                                    'one holding SMPLX_{NEUTRAL,MALE,FEMALE}.npz)')
        try:
            body_model = dict(manifest_body_model(reader), model_path=os.fspath(body_model_dir))
        except KeyError:
            body_model = dict(type='SMPLXBodyModel', model_path=os.fspath(body_model_dir))
    else:
        body_model = manifest_body_model(reader)
    out_file = osp.join(reader.root, COCO_FILE) if out_file is None else os.fspath(out_file)
    export_coco_keypoints(reader, out_file, body_model)
    with open(out_file) as f:
        coco = json.load(f)
    return dict(out_file=out_file, num_images=len(coco['images']), num_annotations=len(coco['annotations']),
                body_model=body_model)


__all__ = ['export_coco', 'COCO_FILE']
