"""Verify a generated dataset: python tools/verify_dataset.py DATASET [--shards 0 3 5-7] [--workers W]
[--no-progress].

Checks every sha256 in every shard's shard.json, meta.jsonl rows against labels.npz ids, counts and the manifest;
prints one line per shard and exits 1 if any shard (or the dataset as a whole) is bad. Reads only. See
docs/dataset_format.md ("Verifying").
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from posedreamer_mm.apis.errors import run_tool  # noqa: E402
from posedreamer_mm.apis.verify import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(run_tool(main))
