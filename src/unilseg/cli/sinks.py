"""The job-wide annotation files' flags (`--coco`, `--coco-results`, `--label-studio`, `--instances`, ...):
defined, checked and reserved once for segment (masks, label maps) and ray; `unilseg.batch.sinks` writes them."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from unilseg.io.paths import user_path

DEFAULT_MIN_AREA = 16  # unilseg.inference.instances.DEFAULT_MIN_AREA; repeated so --help imports no numpy/cv2
DEFAULT_MAX_INSTANCES = 100  # unilseg.inference.instances.DEFAULT_MAX_INSTANCES
DEFAULT_LS_ROOT = "/data/local-files/?d="  # Label Studio's local-files URL prefix
SINK_FLAGS = (("coco", "--coco"), ("coco_results", "--coco-results"), ("label_studio", "--label-studio"))


def add_sink_args(p: argparse.ArgumentParser, path_type: Any) -> None:
    """Add the annotation files' flags to a job's parser."""
    g = p.add_argument_group("annotation files for the whole job (COCO, Label Studio; see the README's "
                             "'Pre-labelling')")
    g.add_argument("--coco", type=path_type, metavar="PATH.json",
                   help="write one COCO instances file: images, categories (one per instruction or class), "
                        "annotations with compressed-RLE masks, boxes, areas and scores")
    g.add_argument("--coco-results", type=path_type, metavar="PATH.json",
                   help="write the COCO results list that COCOeval reads (ids as in --coco)")
    g.add_argument("--coco-polygons", action="store_true", help="segmentations as polygons (outer contours; holes "
                   "fill in) instead of RLE")
    g.add_argument("--image-root", "--coco-image-root", dest="image_root", type=path_type, metavar="DIR",
                   help="file names in --coco / --label-studio are relative to DIR (default: the paths as given)")
    g.add_argument("--label-studio", type=path_type, metavar="PATH.json",
                   help="write Label Studio tasks with brush pre-annotations (import them into a project whose "
                        "labeling config `unilseg label-studio-config --classes ...` prints)")
    g.add_argument("--ls-image-root", metavar="PREFIX", default=DEFAULT_LS_ROOT,
                   help="what goes before each image's relative path in a task's data.image: a URL prefix, or "
                        f"Label Studio's local-files path (default {DEFAULT_LS_ROOT!r})")
    g.add_argument("--instances", action="store_true",
                   help="one annotation per connected component (8-connected) instead of one per mask")
    g.add_argument("--min-area", type=int, metavar="PX", help=f"--instances: drop components smaller than PX "
                   f"pixels (default {DEFAULT_MIN_AREA})")
    g.add_argument("--max-instances", type=int, metavar="N", help="--instances: keep at most N components per "
                   f"mask, the largest (default {DEFAULT_MAX_INSTANCES}); the row says how many were cut")


def sink_targets(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(flag, value) of each annotation file the job writes."""
    return [(flag, getattr(args, dest)) for dest, flag in SINK_FLAGS if getattr(args, dest, None)]


def check_sink_args(args: argparse.Namespace) -> None:
    """The annotation flags' values and combinations, checked before any file or model work."""
    from unilseg.errors import UnilsegError

    targets = sink_targets(args)
    if not targets:
        given = [flag for flag, value in (("--instances", args.instances), ("--coco-polygons", args.coco_polygons),
                                          ("--image-root", args.image_root), ("--min-area", args.min_area),
                                          ("--max-instances", args.max_instances)) if value]
        if given:
            raise UnilsegError(f"{given[0]} shapes the annotation files; add --coco, --coco-results or "
                               "--label-studio (the mask files are one per item either way)")
        return
    if not args.instances:
        for flag, value in (("--min-area", args.min_area), ("--max-instances", args.max_instances)):
            if value is not None:
                raise UnilsegError(f"{flag} applies to --instances; add --instances or drop {flag}")
    for flag, value in (("--min-area", args.min_area), ("--max-instances", args.max_instances)):
        if value is not None and value < 1:
            raise UnilsegError(f"{flag} must be at least 1, not {value}")
    for flag, value in targets:
        if Path(value).suffix.lower() != ".json":
            raise UnilsegError(f"{flag} {value}: name a .json file")
    seen: dict[str, str] = {}
    for flag, value in targets:
        key = os.path.abspath(os.path.expanduser(value))
        if key in seen:
            raise UnilsegError(f"{flag} {value} is also {seen[key]}; give each annotation file its own name")
        seen[key] = f"{flag} {value}"
    if getattr(args, "video", None) is not None:
        raise UnilsegError(f"{targets[0][0]} takes images; for --video use --format rle-json (one RLE file per "
                           "video and instruction)")


def reserve_sinks(registry: Any, args: argparse.Namespace, log_dir: Path | None,
                  shard: tuple[int, int] | None) -> Any:
    """Check every annotation file can be written (exit 2 now, before any model work) and claim it, and
    the job's annotation log in log_dir, so no mask lands on them; returns the registry."""
    from unilseg.errors import UnilsegError
    from unilseg.io.writers import check_dir_target

    check_sink_args(args)
    for flag, value in sink_targets(args):
        path = user_path(value)
        if path.is_dir():
            raise UnilsegError(f"{flag} {value} is a directory; give a .json file path")
        check_dir_target(path.parent, flag)  # made when the file is written, like --sp
        registry.write(path, f"{flag} {value}")
    if args.image_root:
        check_dir_root(args.image_root)
    if sink_targets(args) and log_dir is not None:
        check_dir_target(log_dir, "--sp")
        registry.write(log_dir / log_name(shard), f"the annotation log {log_dir / log_name(shard)}")
    return registry


def check_dir_root(value: str) -> Path:
    """--image-root names an existing folder."""
    from unilseg.errors import UnilsegError

    root = user_path(value)
    if not root.is_dir():
        raise UnilsegError(f"--image-root {value} is not a folder; give the folder the images' file names start from")
    return root


def log_name(shard: tuple[int, int] | None) -> str:
    """The annotation log's name in --sp: annotations.jsonl, or annotations.shard-I-of-N.jsonl."""
    return "annotations.jsonl" if shard is None else f"annotations.shard-{shard[0]}-of-{shard[1]}.jsonl"


def annotation_log(args: argparse.Namespace, items: list, log_dir: Path | None, shard: tuple[int, int] | None,
                   categories: list[str], plan: list | None = None) -> Any:  # -> AnnotationLog | None
    """The job's annotation log with its sinks, or None when no annotation file is asked for. log_dir None (a
    single call, no --sp folder): the log is a temporary file, removed once the files are written. plan: the
    whole plan (before sharding; default the items), which numbers the images, so every shard agrees."""
    import tempfile

    from unilseg.batch.sinks import AnnotationLog, Catalog
    from unilseg.batch.sinks.coco import CocoResultsSink, CocoSink
    from unilseg.errors import UnilsegError

    if not sink_targets(args):
        return None
    root = check_dir_root(args.image_root) if args.image_root else None
    if root is not None:
        real_root = os.path.realpath(root)
        for item in items:
            real = os.path.realpath(str(item.image))
            if os.path.commonpath([real, real_root]) != real_root:
                raise UnilsegError(f"--image-root {args.image_root}: the image {item.image} is not inside it; "
                                   "file names in the annotation files are relative to it")
    sinks: list[Any] = []
    if args.coco:
        sinks.append(CocoSink(user_path(args.coco), root, args.coco_polygons, what=f"--coco {args.coco}"))
    if args.coco_results:
        sinks.append(CocoResultsSink(user_path(args.coco_results), args.coco_polygons,
                                     what=f"--coco-results {args.coco_results}"))
    if args.label_studio:
        from unilseg.batch.sinks.label_studio import LabelStudioSink

        sinks.append(LabelStudioSink(user_path(args.label_studio), root, args.ls_image_root,
                                     model_version=model_version(args), what=f"--label-studio {args.label_studio}"))
    catalog = Catalog.of(plan if plan is not None else items, categories)
    if log_dir is None:
        path = Path(tempfile.mkdtemp(prefix="unilseg-annotations-")) / log_name(None)
        return AnnotationLog(path, sinks, catalog, temporary=True)
    return AnnotationLog(log_dir / log_name(shard), sinks, catalog, keep_existing=args.skip_existing)


def annotate_options(args: argparse.Namespace) -> Any:  # -> AnnotateOptions | None
    """How items become annotations, or None when the job writes no annotation file."""
    from unilseg.batch.sinks import AnnotateOptions

    if not sink_targets(args):
        return None
    return AnnotateOptions(instances=args.instances, min_area=args.min_area or DEFAULT_MIN_AREA,
                           max_instances=args.max_instances or DEFAULT_MAX_INSTANCES)


def model_version(args: argparse.Namespace) -> str:
    """What Label Studio shows as the predictions' model_version: the model's name, else the weights file's."""
    from unilseg.model.registry import DEFAULT_MODEL

    if args.model:
        return args.model
    return Path(args.weights).stem if args.weights else DEFAULT_MODEL
