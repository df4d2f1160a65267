"""Writes the tiny COCO-format stand-in used by the smoke configs: python tools/misc/make_tiny_coco.py OUT_DIR."""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from posedreamer_mm.testing.tiny_coco import write_tiny_coco  # noqa: E402

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('out_dir')
    parser.add_argument('--num-images', type=int, default=8)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    print(write_tiny_coco(args.out_dir, num_images=args.num_images, seed=args.seed))
