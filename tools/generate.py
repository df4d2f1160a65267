"""Generate a labelled image dataset: python tools/generate.py CONFIG [--out DIR] [--num-samples N]
[--num-workers W] [--cfg-options k=v ...] [--launcher {none,pytorch,slurm}].

Re-running the same command resumes (complete shards are kept, partial ones redone); a different config or seed
into an existing output is refused. See docs/generation.md.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import posedreamer_mm  # noqa: E402,F401
from posedreamer_mm.apis.errors import run_tool  # noqa: E402
from posedreamer_mm.apis.generate import run_generate  # noqa: E402

if __name__ == '__main__':
    run_tool(run_generate)
