"""Reading one layout mask from a PNG; the checks and the Tx placement are `radiodiff.sim.masks`'s."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radiodiff.errors import UserError
from radiodiff.sim.masks import TX_SNAP_RADIUS, resolve_tx, validate_mask

__all__ = ["TX_SNAP_RADIUS", "read_gray_png", "read_mask_png", "resolve_tx", "validate_mask"]


def read_mask_png(path: Path, size: int | None = 256) -> np.ndarray:
    """Read a binary PNG mask (0 free, 255 occupied) as `[size, size]` bool, with clear errors."""
    return validate_mask(read_gray_png(path), name=str(path), size=size)


def read_gray_png(path: Path) -> np.ndarray:
    """A one-channel image as its own values `[H, W]` (colour converted to gray), with clear
    errors; transparent pixels are refused."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; give a PNG file")
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    try:
        with Image.open(path) as image:
            _refuse_transparency(image, path)
            # 16-bit and float images keep their own values: converting them to 8 bits first
            # would clip any value above 255 to 255 and pass a non-binary mask as binary.
            raw = image.mode in ("1", "L", "F") or image.mode.startswith("I")
            return np.asarray(image if raw else image.convert("L"))
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{path}: not a readable image ({exc})") from None


def _refuse_transparency(image, path: Path) -> None:
    """Refuse a mask with transparent pixels: converting to gray drops alpha, so buildings drawn
    only in the alpha channel would silently read as free space."""
    if "A" not in image.getbands() and "transparency" not in image.info:
        return
    alpha = np.asarray(image.convert("RGBA"))[..., 3]
    if (alpha != 255).any():
        raise UserError(f"{path}: has transparent pixels ({int((alpha != 255).sum())} of {alpha.size}); "
                        "a mask is read from its gray values, so save it opaque (255 = occupied, 0 = free)")
