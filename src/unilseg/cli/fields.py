"""What the command line calls each argument a library error names (`UnilsegError.field`).

The library says "image X: ..." / "check the image path"; `guarded_main` prints the same
error in the CLI's words ("check the --img path") through this table. One table serves every
subcommand: they share the flag names. A field not listed (e.g. a CLI caller's own "--sp")
is printed as it is.
"""
from __future__ import annotations

FLAGS: dict[str, str] = {
    "image": "--img",
    "out_dir": "--sp",
    "allow_absolute": "--allow-absolute-output",
    "out": "--out",
    "format": "--format",
    "video": "--video",
    "fps": "--fps",
    "start": "--start",
    "end": "--end",
    "every": "--every",
    "max_frames": "--max-frames",
    "smooth": "--smooth",
    "threshold": "--threshold",
    "min_score": "--min-score",
    "model": "--model",
    "weights": "--weights",
    "config": "--config",
    "opts": "--opts",
    "device": "--device",
    "precision": "--precision",
    "compile": "--compile",
    "runtime": "--runtime",
    "threads": "--threads",
}
