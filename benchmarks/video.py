"""Video: frames per second, per-frame cost against a single-image call, and memory over a long clip.

    python benchmarks/video.py [--frames 24] [--full-frames 2] [--repeat 2] [--full-repeat 1] [--long 2000]
                               [--threads 1] [--clock cpu|wall]
                               [--workdir /tmp/unilseg-bench] [--no-full] [--no-rss] [--no-fps]

1. Frames per second of `tasks.video.segment_video` (one instruction, a generated 192-px
   clip read from mp4) for the demo model and for the full-size UniLSeg-20 with seeded
   weights (same tensors and shapes as the real one), fp32 and bf16; and, on the same
   decoded frames, the cost of the single-image call (`set_image` + `predict`: Swin, text
   encoder, decoder, mask) in a warm process. Timings are the best of --repeat runs
   (--full-repeat for UniLSeg-20) after a one-frame warm-up of each path.
2. Peak RSS (ru_maxrss of a child process) of `unilseg segment --video` with the demo
   model on a 20-frame and on a --long-frame clip of 64-px frames, PNG masks written:
   frames stream through, so the two should be about equal.

--clock cpu (default, with --threads 1) measures this process's CPU time rather than
wall time, so a machine shared with other jobs does not inflate it. Prints Markdown.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _common import ROOT, run_child, seeded_checkpoints

sys.path.insert(0, str(ROOT))

TEXT = "the sky"
CLOCK: Callable[[], float] = time.process_time


def timed(fn: Callable[[], object]) -> float:
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def fps_case(predictor, clip: Path, frames: int, repeat: int) -> dict[str, float]:
    """{'video': s per frame through segment_video, 'single': s per frame through set_image + predict}."""
    import cv2

    from unilseg.tasks.video import segment_video

    decoded = []
    cap = cv2.VideoCapture(str(clip))
    while len(decoded) < frames:
        ok, image = cap.read()
        if not ok:
            break
        decoded.append(image)

    def video() -> None:
        for _ in segment_video(predictor, clip, [TEXT], max_frames=len(decoded)):
            pass

    def single() -> None:
        for image in decoded:
            predictor.set_image(image)
            predictor.predict(TEXT)

    predictor.set_image(decoded[0])  # warm-up: allocations, oneDNN kernels
    predictor.predict(TEXT)
    for _ in segment_video(predictor, clip, [TEXT], max_frames=1):
        pass
    best: dict[str, float] = {}
    for _ in range(repeat):
        for name, fn in (("video", video), ("single", single)):
            t = timed(fn) / len(decoded)
            best[name] = min(best.get(name, t), t)
    return best


def rss_case(clip: Path, workdir: Path, threads: int) -> float:
    """Peak RSS (GB) of one `unilseg segment --video` process over `clip`."""
    out = workdir / "rss-out"
    shutil.rmtree(out, ignore_errors=True)
    _, rss, _ = run_child([sys.executable, "-m", "unilseg", "--video", str(clip), "--exp", TEXT, "--sp", str(out),
                           "--model", "unilseg-demo", "--device", "cpu", "--no-progress"],
                          env={"OMP_NUM_THREADS": str(threads)})
    return rss


def main() -> None:
    global CLOCK
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=24, help="frames timed per run, demo model")
    p.add_argument("--full-frames", type=int, default=2, help="frames timed per run, UniLSeg-20")
    p.add_argument("--repeat", type=int, default=2, help="timed runs, demo model (best is kept)")
    p.add_argument("--full-repeat", type=int, default=1, help="timed runs, UniLSeg-20")
    p.add_argument("--long", type=int, default=2000, help="frames of the long clip (memory)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/unilseg-bench"))
    p.add_argument("--no-full", action="store_true", help="skip UniLSeg-20")
    p.add_argument("--no-rss", action="store_true", help="skip the memory runs")
    p.add_argument("--no-fps", action="store_true", help="skip the speed runs")
    args = p.parse_args()
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    import torch

    from unilseg.data.synthetic.clip import iter_frames, write_mp4
    from unilseg.inference.predictor import Predictor
    from unilseg.model.build import load_model

    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    clip = write_mp4((f[0] for f in iter_frames(5, 1, max(args.frames, args.full_frames))),
                     args.workdir / "video-clip.mp4")
    # Memory first: a child's peak RSS starts from its parent's at fork, so spawn them before any model loads.
    memory = "" if args.no_rss else memory_table(args)
    rows = []
    cases = [("unilseg-demo", lambda: load_model("unilseg-demo", device="cpu"), args.frames, args.repeat)]
    if args.no_fps:
        cases = []
    if not args.no_full and not args.no_fps:
        pth, _ = seeded_checkpoints(args.workdir)
        cases.append(("UniLSeg-20 (seeded)", lambda: load_model(pth, "unilseg20", device="cpu"), args.full_frames,
                      args.full_repeat))
    for name, load, frames, repeat in cases:
        for precision in ("fp32", "bf16"):
            predictor = Predictor(load(), precision=precision)
            r = fps_case(predictor, clip, frames, repeat)
            rows.append((name, precision, r))
            print(f"{name} {precision}: {r}", file=sys.stderr)
            del predictor
    if rows:
        print(f"\n{args.clock} clock, {args.threads} thread(s), one instruction, 192-px frames from mp4\n")
        print("| model | precision | video: frames/s | video: s/frame | single-image call: s/frame | video / single |")
        print("|---|---|---|---|---|---|")
    for name, precision, r in rows:
        print(f"| {name} | {precision} | {1 / r['video']:.2f} | {r['video']:.3f} | {r['single']:.3f} | "
              f"{r['video'] / r['single']:.2f} |")
    if memory:
        print(memory)


def memory_table(args: argparse.Namespace) -> str:
    """Peak RSS of `unilseg segment --video` on a 20-frame and a long clip (child processes) -> Markdown."""
    from unilseg.data.synthetic import SceneConfig
    from unilseg.data.synthetic.clip import iter_frames, write_mp4

    small = SceneConfig(size=64)
    short = write_mp4((f[0] for f in iter_frames(5, 2, 20, small)), args.workdir / "video-20.mp4")
    long = write_mp4((f[0] for f in iter_frames(5, 2, args.long, small)), args.workdir / f"video-{args.long}.mp4")
    t0 = time.perf_counter()
    rss_short = rss_case(short, args.workdir, args.threads)
    rss_long = rss_case(long, args.workdir, args.threads)
    return (f"\npeak RSS of `unilseg segment --video` (demo model, 64-px frames, PNG masks; "
            f"{time.perf_counter() - t0:.0f} s wall for both)\n\n"
            f"| 20 frames | {args.long} frames |\n|---|---|\n| {rss_short:.3f} GB | {rss_long:.3f} GB |")


if __name__ == "__main__":
    main()
