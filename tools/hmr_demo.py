"""HMR demo: ``python tools/hmr_demo.py IMAGE CONFIG CHECKPOINT [--bbox x0 y0 x1 y1 ...] [--out overlay.jpg]``.

Recovers one SMPL-X body per person box (default: the whole image is one person) with the config's model and
writes the meshes drawn over the image, at the image's own camera (``--focal``/``--princpt`` if known, else the
image diagonal as focal length and the centre, as CLIFF assumes). ``--save-params`` also writes the SMPL-X
parameters, camera translation and vertices of every person to an ``.npz``.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import posedreamer_mm  # noqa: E402,F401  (compat fixes before mmpose/mmdet load)
from posedreamer_mm.apis.errors import run_tool  # noqa: E402


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('image', help='input image (jpg/png)')
    parser.add_argument('config', help='HMR config, e.g. configs/hmr_vitl_posedreamer_bedlam.py')
    parser.add_argument('checkpoint', help='checkpoint written by tools/train.py')
    parser.add_argument('--bbox', type=float, nargs=4, action='append', metavar=('X0', 'Y0', 'X1', 'Y1'),
                        help='a person box in image pixels (repeat for several people); default the whole image')
    parser.add_argument('--focal', type=float, nargs='+', help='focal length in pixels (f or fx fy)')
    parser.add_argument('--princpt', type=float, nargs=2, help='principal point in pixels')
    parser.add_argument('--out', default=None, help='output image (default: <image>_hmr.jpg beside the input)')
    parser.add_argument('--save-params', default=None, help='also write the predictions to this .npz')
    parser.add_argument('--alpha', type=float, default=0.8, help='mesh opacity')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. body_model_dir=/models/smplx/')
    return parser.parse_args(argv)


def main(argv=None) -> str:
    import cv2
    import numpy as np

    from posedreamer_mm.apis.inference import inference_hmr, init_hmr_model
    from posedreamer_mm.visualization.mesh_overlay import render_mesh_overlay

    args = parse_args(argv)
    model = init_hmr_model(args.config, args.checkpoint, device=args.device, cfg_options=args.cfg_options)
    results = inference_hmr(model, args.image, bboxes=args.bbox, focal=args.focal, princpt=args.princpt)
    meta = results[0].metainfo
    image = cv2.cvtColor(cv2.imread(args.image, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    vertices = [r.pred_instances.vertices[0] for r in results]
    overlay = render_mesh_overlay(image, vertices, model.body_model.faces, meta['focal'], meta['princpt'],
                                  alpha=args.alpha)
    out = args.out or osp.splitext(args.image)[0] + '_hmr.jpg'
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    if not cv2.imwrite(out, cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)):
        raise OSError(f'could not write {out!r} (unknown image extension or unwritable directory)')
    print(f'{len(results)} person(s); overlay written to {out}')
    if args.save_params:
        keys = results[0].pred_instances.keys()
        arrays = {k: np.concatenate([r.pred_instances[k] for r in results]) for k in keys}
        np.savez(args.save_params, focal=np.asarray(meta['focal']), princpt=np.asarray(meta['princpt']), **arrays)
        print(f'predictions written to {args.save_params}')
    return out


if __name__ == '__main__':
    run_tool(main)
