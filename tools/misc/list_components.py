"""Prints (or with --write, writes docs/components.md) every registered posedreamer_mm component."""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

import posedreamer_mm  # noqa: E402,F401
from posedreamer_mm.utils.components import components_markdown  # noqa: E402

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--write', action='store_true', help='write docs/components.md')
    args = parser.parse_args()
    text = components_markdown()
    if args.write:
        with open(osp.join(ROOT, 'docs', 'components.md'), 'w') as f:
            f.write(text)
    print(text)
