"""The dataset report's page opened in headless Chromium (Debian's package; .ci/run installs it) renders with its
images: the screenshot is not blank, and the contact sheet PNG appears in it pixel for pixel. Skipped where no
chromium is installed."""
import os
import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from tests.tools.test_report_tool import dataset, report  # noqa: F401  (module fixtures: a filtered dataset, its report)

CHROMIUM = next((p for p in (shutil.which('chromium'), '/usr/bin/chromium', shutil.which('chromium-browser'))
                 if p and os.path.exists(p)), None)


def screenshot(html: str, out: str, size=(1280, 4000)) -> np.ndarray:
    subprocess.run([CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                    '--force-device-scale-factor=1', f'--screenshot={out}', f'--window-size={size[0]},{size[1]}',
                    f'file://{html}'], capture_output=True, timeout=120, check=True)
    shot = cv2.imread(out)
    assert shot is not None, f'chromium wrote no screenshot to {out}'
    return shot


@pytest.mark.skipif(CHROMIUM is None, reason='chromium is not installed (.ci/run installs it)')
@pytest.mark.timeout(180)
def test_report_page_renders_with_its_images_in_chromium(report, tmp_path):  # noqa: F811
    page = open(report['html']).read()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) >= 4 and all(os.path.isfile(os.path.join(report['out_dir'], s)) for s in srcs)
    shot = screenshot(report['html'], str(tmp_path / 'shot.png'))
    assert shot.std() > 20 and (shot < 250).mean() > 0.05          # not a blank page
    # The contact sheet's first tile pair (image + mesh overlay), found in the screenshot at native size.
    sheet = cv2.imread(os.path.join(report['out_dir'], 'contact_sheet.png'))
    template = sheet[:192, :384]
    score = cv2.matchTemplate(shot, template, cv2.TM_CCOEFF_NORMED).max()
    assert score > 0.95, f'the contact sheet is not in the rendered page (best match {score:.3f})'


@pytest.mark.skipif(CHROMIUM is None, reason='chromium is not installed (.ci/run installs it)')
@pytest.mark.timeout(180)
def test_a_missing_image_does_not_render(report, tmp_path):  # noqa: F811
    """The check above can fail: with the contact sheet removed from a copy of the folder, it is not found."""
    copy = tmp_path / 'copy'
    shutil.copytree(report['out_dir'], copy)
    os.remove(copy / 'contact_sheet.png')
    shot = screenshot(str(copy / 'index.html'), str(tmp_path / 'shot.png'))
    sheet = cv2.imread(os.path.join(report['out_dir'], 'contact_sheet.png'))
    assert cv2.matchTemplate(shot, sheet[:192, :384], cv2.TM_CCOEFF_NORMED).max() < 0.8
