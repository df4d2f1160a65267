"""Export a generated dataset's labels as COCO keypoints for mmpose configs:

    python tools/export_coco.py DATASET_DIR [--out FILE] [--body-model-dir DIR]

Writes one image and one person annotation per committed sample (keypoints with COCO visibility, the clipped box,
the person's silhouette as RLE and its pixel area; docs/dataset_format.md) to ``--out`` (default
``DATASET_DIR/coco_keypoints.json``). The silhouettes are rendered from the labels with the body model the manifest
records; ``--body-model-dir`` points at it on another machine. The dataset's own files are never changed.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import posedreamer_mm  # noqa: E402,F401  (compat fixes)
from posedreamer_mm.apis.errors import run_tool  # noqa: E402
from posedreamer_mm.apis.export import export_coco  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('dataset_dir', help='generated dataset (the directory tools/generate.py wrote)')
    parser.add_argument('--out', help='COCO json to write (default: DATASET_DIR/coco_keypoints.json)')
    parser.add_argument('--body-model-dir', help='SMPL-X model directory, if not where the manifest says')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    summary = export_coco(args.dataset_dir, args.out, args.body_model_dir)
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == '__main__':
    run_tool(main)
