"""Referring video segmentation on generated clips: per-frame mIoU and J, through the video path.

Each clip (`unilseg.data.synthetic.clip`: a scene whose objects move a few pixels per
frame) is written to an mp4 (mp4v, lossy, as real videos are) or to PNG frames, then
segmented by `tasks.video.segment_video` exactly as `unilseg segment --video` does, and
every frame's mask is compared with that frame's exact ground truth. A sequence is one
(clip, instruction) pair.

  per-frame mIoU = mean IoU over all (frame, instruction) pairs
  oIoU           = total intersection / total union over them
  J              = region similarity (DAVIS): mean over sequences of the mean IoU over frames
  J-recall       = mean over sequences of the fraction of frames with IoU > 0.5
The contour accuracy F of the DAVIS benchmark is omitted. With clips of equal length
(as generated here) per-frame mIoU and J coincide; they differ on real data sets.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from unilseg.data.synthetic import SceneConfig
from unilseg.data.synthetic.clip import CLIP_FPS, make_clip, write_mp4, write_pngs
from unilseg.errors import UnilsegError
from unilseg.eval.metrics import fraction, intersection_union, iou
from unilseg.inference.predictor import Predictor
from unilseg.io.progress import progress_bar
from unilseg.tasks.video import segment_video

DEFAULT_SPEC = "synthetic-video:8:5"


def parse_spec(spec: str) -> tuple[int, int, int, int]:
    """'synthetic-video:CLIPS[:SEED[:FRAMES[:SIZE]]]' -> (clips, seed, frames, size); defaults 8, 5, 24, 192."""
    parts = spec.split(":")
    usage = f"bad video data spec {spec!r}; use synthetic-video:CLIPS[:SEED[:FRAMES[:SIZE]]], e.g. {DEFAULT_SPEC}"
    if parts[0] != "synthetic-video" or len(parts) > 5:
        raise UnilsegError(usage)
    try:
        values = [int(p) for p in parts[1:]]
    except ValueError:
        raise UnilsegError(usage) from None
    clips, seed, frames, size = values + [8, 5, 24, 192][len(values):]
    if clips < 1 or frames < 1 or size < 32:
        raise UnilsegError(usage)
    return clips, seed, frames, size


def sequence_stats(ious: list[list[float]], inter: int, union: int) -> dict[str, float]:
    """Summary of sequences (each a list of per-frame IoUs) with their pooled pixel counts."""
    flat = [v for seq in ious for v in seq]
    if not flat:
        return {"count": 0}
    return {"count": len(flat), "sequences": len(ious), "mIoU": float(np.mean(flat)), "oIoU": iou(inter, union),
            "J": float(np.mean([np.mean(s) for s in ious])),
            "J-recall": float(np.mean([np.mean(np.array(s) > 0.5) for s in ious]))}


def evaluate_clips(
    predictor: Predictor, clips: int = 8, seed: int = 5, frames: int = 24, size: int = 192, source: str = "mp4",
    batch_size: int = 1, workdir: str | Path | None = None, progress: bool = False,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Score `clips` generated clips of stream `seed` read back from `source` ('mp4' or 'png').

    Returns {'overall': stats, 'granularity': {name: stats}} with count, sequences, mIoU,
    oIoU, J, J-recall. on_record receives each sequence: clip, text, granularity, ious.
    """
    if source not in ("mp4", "png"):
        raise UnilsegError(f"video source {source!r}: use mp4 or png")
    seqs: list[tuple[str, list[float], int, int]] = []  # granularity, ious, inter, union
    bar = None
    if progress:
        bar = progress_bar(clips * frames, "frame", desc="eval video")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for c in range(clips):
            clip = make_clip(seed, c, frames, SceneConfig(size=size))
            if not clip.instructions:
                continue
            path = (write_mp4(clip.frames, Path(tmp) / f"clip{c}.mp4", CLIP_FPS) if source == "mp4"
                    else write_pngs(clip.frames, Path(tmp) / f"clip{c}"))
            truth = [clip.masks(k) for k in range(len(clip.instructions))]
            per = [([], 0, 0) for _ in clip.instructions]
            for frame in segment_video(predictor, path, [i.text for i in clip.instructions], batch_size=batch_size,
                                                 fps=CLIP_FPS):
                for k, pred in enumerate(frame.predictions):
                    inter, union = intersection_union(pred.mask, truth[k][frame.index])
                    ious, i0, u0 = per[k]
                    ious.append(iou(inter, union))
                    per[k] = (ious, i0 + inter, u0 + union)
                if bar is not None:
                    bar.update(1)
            for inst, (ious, inter, union) in zip(clip.instructions, per):
                seqs.append((inst.granularity, ious, inter, union))
                if on_record is not None:
                    on_record({"clip": c, "text": inst.text, "granularity": inst.granularity,
                               "J": float(np.mean(ious)), "ious": [round(v, 4) for v in ious]})
    if bar is not None:
        bar.close()

    def stats(group):
        return sequence_stats([s[1] for s in group], sum(s[2] for s in group), sum(s[3] for s in group))

    return {"overall": stats(seqs),
            "granularity": {g: stats([s for s in seqs if s[0] == g]) for g in sorted({s[0] for s in seqs})}}


def format_table(summary: dict[str, Any]) -> str:
    """Plain-text table: one row overall and one per granularity; counts, then fractions (`metrics.fraction`)."""
    cols = ["sequences", "count", "mIoU", "oIoU", "J", "J-recall"]
    rows = [("overall", summary["overall"])] + [(f"granularity={g}", s) for g, s in summary["granularity"].items()]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'':<{width}}  " + "  ".join(f"{c:>9}" for c in cols)]
    for name, s in rows:
        cells = [f"{s.get(c, 0):>9}" for c in cols[:2]] + [fraction(s.get(c), 9) for c in cols[2:]]
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)
