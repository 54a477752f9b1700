"""Instances: a mask split into its connected components ("all the cars" -> each car).

Post-processing only (no model): 8-connected components of a boolean mask, each with its
box, area and score (the mean soft probability inside it), largest first. Components
smaller than `min_area` pixels are dropped (specks at a mask's rim); at most
`max_instances` are kept, so a mask of 100k specks stays bounded, and how many were cut
is told.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_MIN_AREA = 16  # pixels: smaller components are specks, not instances
DEFAULT_MAX_INSTANCES = 100  # per mask; COCO's evaluation scores at most 100 detections per image


@dataclass
class Instance:
    """One connected component of a mask, in the original image's frame."""

    bbox: tuple[int, int, int, int]  # (x, y, w, h) in pixels, COCO's order
    area: int  # pixels
    score: float  # mean soft probability inside it
    crop: np.ndarray  # bool (h, w): the component inside bbox

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        """The box as (x0, y0, x1, y1), x1/y1 exclusive."""
        x, y, w, h = self.bbox
        return x, y, x + w, y + h

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The component as a full bool (H, W) mask of the image's `shape`."""
        out = np.zeros(shape, bool)
        x0, y0, x1, y1 = self.xyxy
        out[y0:y1, x0:x1] = self.crop
        return out


@dataclass
class Instances:
    """What `split_instances` found: the instances kept, largest first, and how many components were cut."""

    instances: list[Instance]
    dropped_small: int = 0  # components under min_area
    dropped_over_cap: int = 0  # components past max_instances (the smallest ones)


def mask_bbox(mask: np.ndarray) -> list[int]:
    """bool (H, W) -> its box [x, y, w, h] in pixels ([0, 0, 0, 0] for an empty mask): COCO's box form."""
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)] if len(xs) else [0, 0, 0, 0]


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """bool (H, W) -> one polygon per outer contour, each [x0, y0, x1, y1, ...] in pixels (holes fill in;
    contours of fewer than 3 points are dropped): COCO's and CVAT's polygon form."""
    contours, _ = cv2.findContours(np.asarray(mask, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def check_instance_limits(min_area: int, max_instances: int) -> None:
    """Refuse limits that make no sense (a ValueError naming the limit)."""
    if isinstance(min_area, bool) or not isinstance(min_area, (int, np.integer)) or min_area < 1:
        raise ValueError(f"min_area must be a whole number of pixels >= 1, not {min_area!r}")
    if isinstance(max_instances, bool) or not isinstance(max_instances, (int, np.integer)) or max_instances < 1:
        raise ValueError(f"max_instances must be a whole number >= 1, not {max_instances!r}")


def split_instances(mask: np.ndarray, prob: np.ndarray | None = None, min_area: int = DEFAULT_MIN_AREA,
                    max_instances: int = DEFAULT_MAX_INSTANCES) -> Instances:
    """mask bool (H, W), prob float (H, W) or None -> its 8-connected components, largest first.

    Ties in area keep raster order (of each component's first pixel), so the order is the
    same on every run. score: mean of `prob` inside the component (1.0 without `prob`).
    """
    check_instance_limits(min_area, max_instances)
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), not {mask.shape}")
    if not mask.any():
        return Instances([])
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8,
                                                               ltype=cv2.CV_32S)
    areas = stats[1:, cv2.CC_STAT_AREA]
    big = np.flatnonzero(areas >= min_area)
    order = big[np.argsort(-areas[big], kind="stable")]
    kept = order[:max_instances]
    out = []
    for index in kept:
        x, y, w, h = (int(v) for v in stats[index + 1, :4])
        crop = labels[y : y + h, x : x + w] == index + 1
        score = float(prob[y : y + h, x : x + w][crop].mean()) if prob is not None else 1.0
        out.append(Instance((x, y, w, h), int(areas[index]), score, crop))
    return Instances(out, dropped_small=int(count - 1 - len(big)), dropped_over_cap=int(len(order) - len(kept)))
