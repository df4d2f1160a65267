"""DPO preference pairs from scored candidates: best vs worst OKS per control (docs/dpo_pairs.md).

    python tools/make_dpo_pairs.py CANDIDATES_DIR [--scores SCORES] [--out PAIRS] [--min-gap G] [--min-winner W]
                                   [--no-match {exclude,zero}] [--overwrite]

``CANDIDATES_DIR`` is a dataset generated with ``candidates_per_sample=N`` (configs/dpo/candidates/), ``SCORES``
the ``scores.jsonl`` of ``tools/filter.py`` on it (default ``CANDIDATES_DIR/filter/scores.jsonl``). Writes the
pairs (JSON lines of references: winner/loser ids, rows, images, seeds, OKS; the controls, prompt and gap) to
``--out`` (default ``CANDIDATES_DIR/dpo_pairs.jsonl``), ``<stem>.report.json`` (groups by reason, unscored
candidates by cause, gap statistics) and ``<stem>.report.png`` (the counts and the gap histogram). A pairs file
another run made with other thresholds (or from another candidates dataset) is replaced only with ``--overwrite``.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import posedreamer_mm  # noqa: E402,F401  (compat fixes before mmpose/mmdet load)
from posedreamer_mm.apis.dpo_pairs import make_pairs  # noqa: E402
from posedreamer_mm.apis.errors import run_tool  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('candidates_dir', help='candidates dataset (generator output with candidates_per_sample)')
    parser.add_argument('--scores', help='scores.jsonl of tools/filter.py (default: CANDIDATES_DIR/filter/'
                                         'scores.jsonl)')
    parser.add_argument('--out', help='pairs file (default: CANDIDATES_DIR/dpo_pairs.jsonl)')
    parser.add_argument('--min-gap', type=float, default=0.05, help='smallest winner - loser OKS kept (0.05)')
    parser.add_argument('--min-winner', type=float, default=0.5, help='smallest winner OKS kept (0.5)')
    parser.add_argument('--no-match', choices=('exclude', 'zero'), default='exclude',
                        help='a candidate in which no person matched its label: left out (exclude) or OKS 0 (zero)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a pairs file made with other settings (default: refuse)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    scores = args.scores or osp.join(args.candidates_dir, 'filter', 'scores.jsonl')
    out = args.out or osp.join(args.candidates_dir, 'dpo_pairs.jsonl')
    report = make_pairs(args.candidates_dir, scores, out, min_gap=args.min_gap, min_winner=args.min_winner,
                        no_match=args.no_match, overwrite=args.overwrite)
    print(json.dumps(report, indent=1, sort_keys=True))
    causes = {k: v for k, v in report['unscored_by_cause'].items() if v}
    skipped = (f'{sum(causes.values())} candidates unscored ({", ".join(f"{k} {v}" for k, v in causes.items())}), '
               'left out' if causes else 'no candidate unscored')
    replaced = (f'; replaced the previous file ({report["replaced"]["num_pairs"]} pairs)'
                if 'replaced' in report else '')
    print(f'[make_dpo_pairs] {report["num_pairs"]} pairs of {report["num_groups"]} controls; {skipped} -> '
          f'{out}{replaced}')
    if report.get('candidates_status') != 'complete':
        # a generation still running (or killed) has written only some shards: say that the pairs cover those
        print(f'[make_dpo_pairs] WARNING: the candidates dataset is {report.get("candidates_status")!r}, not '
              f'complete: these pairs cover its {report["num_candidates"]} written candidates only; run the '
              'generate command to completion and remake the pairs for all of them')
    return report


if __name__ == '__main__':
    run_tool(main)
