"""`unilseg eval`: score a model's masks (mIoU, oIoU, Prec@X by granularity and source).

    unilseg eval --model unilseg-20 --data refcoco:val --refer-root data/refer
    unilseg eval --weights runs/small/model.pth --data synthetic:250:1
    unilseg eval --model unilseg-demo --data synthetic:250:1:absent=1 --plot presence.png   (+ N-acc, T-acc, ...)
    unilseg eval --model unilseg-20 --data grefcoco:val --refer-root data/refer   gRefCOCO (texts naming nothing)
    unilseg eval --model unilseg-demo --task semantic --data synthetic:250:2   (label maps: per-class IoU, mIoU)
    unilseg eval --task video --model unilseg-demo [--data synthetic-video:8:5]   per-frame mIoU and J
    unilseg eval --task instances --model unilseg-demo --data synthetic:100:2   COCO mask AP, AP50, AR
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from unilseg.cli.args import (
    add_data_args,
    add_min_score_arg,
    add_model_args,
    check_settings,
    finite_float,
    guarded_main,
    read_classes,
)
from unilseg.cli.sinks import DEFAULT_MAX_INSTANCES, DEFAULT_MIN_AREA


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="unilseg eval",
        description="Evaluate a UniLSeg model: mIoU, oIoU and Prec@0.5..0.9, overall and by granularity and source; "
                    "with texts naming nothing, also gRefCOCO's N-acc, T-acc, gIoU and cIoU.",
    )
    p.add_argument("--data", help="data spec: manifest.jsonl, a folder with texts.csv, "
                   "refcoco:val|testA|testB, refcoco+:..., refcocog:val|test, grefcoco:train|val|testA|testB "
                   "(gRefCOCO, --refer-root holding grefcoco/: texts naming one, several or no objects), "
                   "synthetic:SCENES[:SEED[:SIZE]][:absent=K] (K texts per scene naming nothing); "
                   "empty ground truth adds N-acc, T-acc, gIoU, cIoU and the presence score's AUC and best "
                   "--min-score; --task video: synthetic-video:CLIPS[:SEED[:FRAMES[:SIZE]]] "
                   "(default synthetic-video:8:5)")
    p.add_argument("--task", choices=("referring", "semantic", "video", "instances"), default="referring",
                   help="referring (default): a mask per text; semantic: a label map per image, per-class IoU and "
                        "mIoU against label-map ground truth (synthetic:... has it); video: generated clips "
                        "segmented through the video path, per-frame mIoU and J; instances: each mask split into "
                        "instances (as segment --instances) against the scenes' instances (synthetic:... has "
                        "them), COCO mask AP, AP50, AP75 and AR through pycocotools")
    p.add_argument("--classes", metavar="A,B,...", help="semantic: classes (NAME or NAME: INSTRUCTION); default "
                   "for synthetic data: sky, ground, house, tree, car, ball, sun with their default instructions")
    p.add_argument("--classes-file", metavar="FILE", help="semantic: classes, one per line")
    p.add_argument("--video-source", choices=("mp4", "png"), default="mp4",
                   help="--task video: read the clips back from mp4 (lossy, default) or from PNG frames")
    g = p.add_argument_group("--task instances")
    g.add_argument("--min-area", type=int, metavar="PX", help="components smaller than PX pixels are no instance "
                   f"(default {DEFAULT_MIN_AREA}, as segment --instances)")
    g.add_argument("--max-instances", type=int, metavar="N",
                   help=f"at most N instances per mask, the largest (default {DEFAULT_MAX_INSTANCES})")
    g.add_argument("--out", metavar="DIR", help="keep the job's files there: images/, masks/ (+ results.jsonl), "
                   "annotations.jsonl, truth.json (COCO ground truth), predictions.json (COCO results); "
                   "default: a temporary folder")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--batch-size", type=int, default=8, help="images per encoder batch")
    p.add_argument("--text-batch", type=int, metavar="N", help="(image, text) pairs per decoder batch "
                   "(default: 1 on CPU, 16 on GPU)")
    p.add_argument("--threshold", type=finite_float, help="mask = soft map > threshold (default: the model's)")
    add_min_score_arg(p)
    p.add_argument("--limit", type=int, help="score only the first N texts (semantic: images)")
    p.add_argument("--json", metavar="PATH", help="write the summary as JSON")
    p.add_argument("--per-sample", metavar="PATH.jsonl", help="write one JSON line per scored text")
    p.add_argument("--plot", metavar="PATH.png", help="write a PNG of the presence scores of texts with a target "
                   "and without, the best min score as a line (needs matplotlib: extra 'plot')")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> dict:
    import json

    from unilseg.cli.args import predictor_from_args
    from unilseg.data.sources import open_samples
    from unilseg.errors import UnilsegError
    from unilseg.eval.evaluate import evaluate
    from unilseg.eval.metrics import format_absent_table, format_table
    from unilseg.io.writers import check_file_target, write_atomic

    check_settings(args)
    if args.limit is not None and args.limit < 1:
        raise UnilsegError(f"--limit must be at least 1, not {args.limit}")
    if args.task != "referring":
        for flag, value in (("--min-score", args.min_score), ("--plot", args.plot)):
            if value is not None:
                raise UnilsegError(f"{flag} applies to --task referring")
    if args.task == "video":
        return _run_video(args)
    if not args.data:
        raise UnilsegError("give --data SPEC (a manifest, a folder, refcoco:val, synthetic:250:1, ...)")
    for flag, path in (("--json", args.json), ("--per-sample", args.per_sample), ("--plot", args.plot)):
        if path:
            check_file_target(path, flag)
    if args.plot:
        from unilseg.eval.plots import check_plotting

        check_plotting()
    if args.task == "semantic":
        return run_semantic(args)
    if args.task == "instances":
        return run_instances(args)
    if args.classes is not None or args.classes_file is not None:
        raise UnilsegError("--classes applies to --task semantic")
    samples = open_samples(args.data, args.refer_root, args.coco_images)
    predictor = predictor_from_args(args)
    rows: list[dict] = []
    summary = evaluate(predictor, samples, args.batch_size, args.limit, progress=not args.no_progress,
                       on_record=rows.append)
    min_score = predictor.min_score
    print(f"{args.data}: {summary['overall']['count']} texts, threshold {predictor.threshold}"
          + (f", min score {min_score}" if min_score is not None else ""))
    print(format_table(summary))
    if "absent" in summary:
        print(format_absent_table(summary))
    model_name = args.model or args.weights or _default_name(predictor)
    report = {"data": args.data, "model": model_name, "config": args.config, "threshold": predictor.threshold,
              **({"min_score": min_score} if min_score is not None else {}), **summary}
    if args.json:
        write_atomic(args.json, (json.dumps(report, indent=2) + "\n").encode())
    if args.per_sample:
        write_atomic(args.per_sample, "".join(json.dumps(r) + "\n" for r in rows).encode())
    if args.plot:
        from unilseg.eval.plots import presence_plot

        target = [r["presence"] for r in rows if not r["target_empty"]]
        empty = [r["presence"] for r in rows if r["target_empty"]]
        line = min_score if min_score is not None else summary.get("absent", {}).get("best_min_score")
        presence_plot((target, empty), args.plot, line)  # the min score in force, else the best one
        print(f"presence plot: {args.plot}")
    return report


def run_semantic(args: argparse.Namespace) -> dict:
    """--task semantic: label maps against label-map ground truth -> the summary (printed, and --json)."""
    import json

    from unilseg.cli.args import predictor_from_args
    from unilseg.data.sources import open_label_maps
    from unilseg.errors import UnilsegError
    from unilseg.eval.semantic import evaluate_semantic, format_semantic_table
    from unilseg.io.writers import write_atomic
    from unilseg.tasks.labelmap import check_classes

    if args.per_sample:
        raise UnilsegError("--per-sample applies to --task referring; --json holds the per-class figures")
    given = read_classes(args) if args.classes is not None or args.classes_file is not None else None
    items, defaults = open_label_maps(args.data, None if given is None else [c.name for c in given])
    classes = given if given is not None else check_classes(defaults)
    predictor = predictor_from_args(args)
    summary = evaluate_semantic(predictor, items, classes, args.batch_size, args.limit, progress=not args.no_progress)
    print(f"{args.data}: {summary['images']} images, {len(classes)} classes, threshold {predictor.threshold}")
    print(format_semantic_table(summary))
    report = {"data": args.data, "task": "semantic", "model": args.model or args.weights, "config": args.config,
              "threshold": predictor.threshold, **summary}
    if args.json:
        write_atomic(args.json, (json.dumps(report, indent=2) + "\n").encode())
    return report


def run_instances(args: argparse.Namespace) -> dict:
    """--task instances: a segment job with instances on generated scenes, COCOeval(segm) of its results file
    -> the summary (printed, and --json)."""
    import json
    import tempfile

    from unilseg.cli.args import predictor_from_args
    from unilseg.errors import UnilsegError
    from unilseg.eval.instances import annotate_options, evaluate_instances, format_table, instance_samples
    from unilseg.io.writers import check_dir_target, write_atomic

    if args.per_sample:
        raise UnilsegError("--per-sample applies to --task referring; --out DIR keeps the COCO files")
    if args.classes is not None or args.classes_file is not None:
        raise UnilsegError("--classes applies to --task semantic")
    for flag, value in (("--min-area", args.min_area), ("--max-instances", args.max_instances)):
        if value is not None and value < 1:
            raise UnilsegError(f"{flag} must be at least 1, not {value}")
    options = annotate_options(args.min_area, args.max_instances)
    samples = instance_samples(args.data)
    if args.out:
        check_dir_target(args.out, "--out")
    predictor = predictor_from_args(args)
    with tempfile.TemporaryDirectory(prefix="unilseg-eval-") as tmp:
        summary = evaluate_instances(predictor, samples, args.out or tmp, options, args.batch_size, args.limit,
                                     progress=not args.no_progress)
    overall = summary["overall"]
    print(f"{args.data}: {summary['images']} images, {overall['instructions']} instructions, "
          f"{overall['instances']} instances, {overall['detections']} detections, threshold {predictor.threshold}, "
          f"min area {options.min_area} px")
    print(format_table(summary))
    report = {"data": args.data, "task": "instances", "model": args.model or args.weights or _default_name(predictor),
              "config": args.config, "threshold": predictor.threshold, "min_area": options.min_area,
              "max_instances": options.max_instances, **summary}
    if args.json:
        write_atomic(args.json, (json.dumps(report, indent=2) + "\n").encode())
    return report


def _run_video(args: argparse.Namespace) -> dict:
    """--task video: generated clips through `tasks.video.segment_video`; per-frame mIoU, J (F omitted)."""
    import json

    from unilseg.cli.args import predictor_from_args
    from unilseg.eval.video import DEFAULT_SPEC, evaluate_clips, format_table, parse_spec
    from unilseg.io.writers import check_file_target, write_atomic

    spec = args.data or DEFAULT_SPEC
    clips, seed, frames, size = parse_spec(spec)
    for flag, path in (("--json", args.json), ("--per-sample", args.per_sample)):
        if path:
            check_file_target(path, flag)
    predictor = predictor_from_args(args)
    rows: list[str] = []
    on_record = (lambda r: rows.append(json.dumps(r))) if args.per_sample else None
    summary = evaluate_clips(predictor, clips, seed, frames, size, source=args.video_source,
                             batch_size=args.batch_size, progress=not args.no_progress, on_record=on_record)
    print(f"{spec} ({args.video_source}): {summary['overall'].get('sequences', 0)} sequences, "
          f"{summary['overall']['count']} frame masks, threshold {predictor.threshold} (J: region similarity; "
          "F, contour accuracy, omitted)")
    print(format_table(summary))
    report = {"data": spec, "task": "video", "source": args.video_source, "model": args.model or args.weights,
              "threshold": predictor.threshold, **summary}
    if args.json:
        write_atomic(args.json, (json.dumps(report, indent=2) + "\n").encode())
    if args.per_sample:
        write_atomic(args.per_sample, ("\n".join(rows) + "\n").encode())
    return report


def _default_name(predictor) -> str:
    """The model that ran when neither --model nor --weights named one: the config's, or (an export runtime,
    which has no torch network) the default model, whose cached export it found."""
    if predictor.model is not None:
        return predictor.model.config.get("name")
    from unilseg.model.registry import DEFAULT_MODEL

    return DEFAULT_MODEL


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    return guarded_main(lambda: run(args))
