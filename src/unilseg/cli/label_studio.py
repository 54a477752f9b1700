"""`unilseg label-studio-config`: print the Label Studio labeling config that `--label-studio` tasks match."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from unilseg.cli.args import guarded_main, path_arg, read_classes, text_arg


def main(argv: Sequence[str]) -> int:
    """Print the config (an Image and BrushLabels with one Label per class) for a project's Labeling Interface."""
    p = argparse.ArgumentParser(
        prog="unilseg label-studio-config",
        description="Print a Label Studio labeling config (Image + BrushLabels, one Label per class) for the tasks "
        "`unilseg segment --label-studio` writes. Paste it into the project's Settings > Labeling Interface > Code.")
    p.add_argument("--classes", type=text_arg, metavar="A,B,...",
                   help='the labels: a label map\'s classes ("sky,road,car: all the cars" gives sky, road, car), '
                   "or a mask job's instructions")
    p.add_argument("--classes-file", type=path_arg, metavar="FILE", help="the labels, one per line: NAME or "
                   "NAME: INSTRUCTION (a mask job's instructions: one per line, without ':')")
    p.add_argument("--from-name", type=text_arg, default="label", help="the BrushLabels tag's name (default: label)")
    p.add_argument("--to-name", type=text_arg, default="image", help="the Image tag's name (default: image)")
    args = p.parse_args(argv)

    def run() -> None:
        from unilseg.batch.sinks.label_studio import label_studio_config
        from unilseg.errors import UnilsegError

        if args.classes is None and args.classes_file is None:
            raise UnilsegError("give the labels: --classes A,B,... or --classes-file FILE")
        names = [spec.name for spec in read_classes(args)]
        sys.stdout.write(label_studio_config(names, args.from_name, args.to_name))

    return guarded_main(run)
