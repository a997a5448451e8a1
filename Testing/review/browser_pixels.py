"""What a streamed view of ``hybridseg review`` shows, from its pixels; and how Debian's Chromium is launched.

Shared by the real-browser test (``test_browser.py``) and the first-render benchmark
(``Testing/benchmarks/review_first_render.py``), so both judge "the image and the overlay are on screen" alike.
"""

from __future__ import annotations

import io

import numpy as np

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 900}
#: the streamed views in DOM order: axial, 3D, coronal, sagittal
VIEW_SELECTOR = "#view-grid img"


def pixels(locator) -> np.ndarray:
    """RGB pixels (int16, so differences do not wrap) of a Playwright locator's screenshot."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(np.int16)


def hot_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels in inferno's orange/yellow (the attention overlay)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r > 150) & (r > g + 40) & (r > b + 60)


def counts(rgb: np.ndarray) -> dict:
    """Pixel counts per colour class: grey image, hot overlay, green and blue segment fills, lit pixels."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    spread = rgb.max(-1) - rgb.min(-1)
    return {
        "grey": int(((spread < 12) & (rgb.max(-1) > 40)).sum()),  # the image (grey levels)
        "hot": int(hot_mask(rgb).sum()),  # inferno's orange/yellow
        "green": int(((g > r + 50) & (g > b + 30)).sum()),  # segment Shell
        "blue": int(((b > r + 60) & (b > g + 20)).sum()),  # segment Core
        "lit": int((rgb.max(-1) > 30).sum()),
    }


def shows_image_and_overlay(found: dict, grey: int = 500, hot: int = 200) -> bool:
    """True when a view's pixel ``counts`` show the grey image and the attention overlay."""
    return found["grey"] > grey and found["hot"] > hot
