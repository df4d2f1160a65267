"""A contact sheet of a control-stage output: one row per sample, one column per control, plus keypoints."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.visualization import draw_coco17


def make_contact_sheet(out_dir: str | Path, max_rows: int = 8, tile: int = 192,
                       path: str | Path | None = None) -> Path:
    """Writes ``<out_dir>/contact_sheet.png`` from ``manifest.jsonl``, ``labels/`` and ``controls/``.

    The last column draws each label's COCO-17 keypoints over the shaded (or first) control, so a reader
    sees at a glance whether labels and images agree.
    """
    out_dir = Path(out_dir)
    records = [json.loads(line) for line in (out_dir / 'manifest.jsonl').read_text().splitlines() if line][:max_rows]
    if not records:
        raise ValueError(f'{out_dir / "manifest.jsonl"} lists no samples: nothing to show')
    types = list(records[0]['controls'])
    header_h, label_w = 28, 0
    sheet = np.zeros((header_h + tile * len(records), tile * (len(types) + 1), 3), np.uint8)
    for c, name in enumerate(types + ['keypoints (label)']):
        cv2.putText(sheet, name, (c * tile + 6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    for r, rec in enumerate(records):
        y0 = header_h + r * tile
        images = {}
        for c, name in enumerate(types):
            img = cv2.cvtColor(cv2.imread(str(out_dir / rec['controls'][name])), cv2.COLOR_BGR2RGB)
            images[name] = img
            sheet[y0:y0 + tile, c * tile + label_w:(c + 1) * tile] = cv2.resize(img, (tile, tile),
                                                                                  interpolation=cv2.INTER_AREA)
        label = BodySample.load_npz(str(out_dir / rec['label']))
        base = images.get('shaded', images[types[0]])
        overlay = draw_coco17(base, label.keypoints_coco17, radius=max(2, base.shape[0] // 128))
        sheet[y0:y0 + tile, len(types) * tile:] = cv2.resize(overlay, (tile, tile), interpolation=cv2.INTER_AREA)
        cv2.putText(sheet, rec['id'][-22:], (4, y0 + tile - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (200, 200, 200), 1,
                    cv2.LINE_AA)
    path = Path(path) if path is not None else out_dir / 'contact_sheet.png'
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path
