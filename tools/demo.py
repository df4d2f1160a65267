"""The main job on its embedded default: python tools/demo.py [--config C] [--out DIR] [--num-samples N] [...].

A thin call of the same generator as tools/generate.py (configs/demo/render_standin_procedural.py: procedural
poses -> controls -> the rendering-baseline backend -> a sharded dataset), then a contact sheet of the generated
images with their label skeletons drawn over them and a COCO-keypoints export. With no ``body_model_dir`` it uses
the open SMPL-X stand-in (not SMPL-X; see docs/bodies.md). Other arguments as tools/generate.py.
"""
import json
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

import posedreamer_mm  # noqa: E402,F401
from posedreamer_mm.apis.errors import run_tool  # noqa: E402
from posedreamer_mm.apis.generate import run_generate  # noqa: E402

DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'demo', 'render_standin_procedural.py')


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    config = DEFAULT_CONFIG
    if '--config' in argv:
        i = argv.index('--config')
        config = argv[i + 1]
        del argv[i:i + 2]
    summary = run_generate([config, *argv], description=__doc__)
    from posedreamer_mm.generation import GeneratedDataReader, export_coco_keypoints
    from posedreamer_mm.visualization.contact_sheet import make_contact_sheet
    reader = GeneratedDataReader(summary['out_dir'])
    summary['contact_sheet'] = make_contact_sheet(reader, osp.join(summary['out_dir'], 'contact_sheet.png'))
    summary['coco_keypoints'] = export_coco_keypoints(reader, osp.join(summary['out_dir'], 'coco_keypoints.json'))
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == '__main__':
    run_tool(main)
