"""User-given paths: `~` expanded as a shell does it."""
from __future__ import annotations

import os
from pathlib import Path


def user_path(path: str | Path) -> Path:
    """`path` with `~` / `~user` expanded; an unknown user's `~name` stays literal, as in a shell
    (`Path.expanduser` raises there, and a manifest row or flag must not crash the run)."""
    return Path(os.path.expanduser(path))
