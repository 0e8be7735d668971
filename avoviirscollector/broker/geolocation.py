"""Pass direction from a granule's own geolocation file: task_broker's fallback when no TLE answers.

The file (GITCO, GMTCO, GDNBO, ...) is opened read-only with h5py and its first two-dimensional ``Latitude``
dataset (scans x pixels, e.g. ``All_Data/VIIRS-IMG-GEO-TC_All/Latitude``) is read along the nadir column only
(one small read, never the whole array). Scans are stored in time order, so the direction is the sign of the
change between the first and the last valid scan line (fill values, outside -90..90, are left out): rising
latitude is ascending, falling is descending. A file without such a dataset, with fewer than two valid lines, or
with no change, gives no answer. It runs in the pass-direction helper process, never in the broker itself.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

LATITUDE_NAME = "Latitude"


def local_path(uri: str) -> Path | None:
    """The local path of a dataset ``uri`` (a plain path or ``file://``), None for anything remote."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return Path(parts.path)
    return None


def direction_from_geolocation(path: Path) -> str | None:
    """ascending, descending, or None when the file has no usable ``Latitude`` dataset."""
    import h5py
    import numpy as np

    with h5py.File(path, "r") as h5:
        found: list = []

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name.rsplit("/", 1)[-1] == LATITUDE_NAME and obj.ndim == 2:
                found.append(obj)
                return True
            return None

        h5.visititems(visit)
        if not found:
            return None
        latitude = found[0]
        rows, cols = latitude.shape
        if rows < 2 or cols < 1:
            return None
        nadir = latitude[:, cols // 2].astype("float64")  # one column: rows x 4 bytes
    valid = np.flatnonzero((nadir >= -90.0) & (nadir <= 90.0))
    if valid.size < 2:
        return None
    change = nadir[valid[-1]] - nadir[valid[0]]
    if change == 0:
        return None
    return "ascending" if change > 0 else "descending"
