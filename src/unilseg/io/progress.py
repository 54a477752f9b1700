"""Job progress bars: the one place that makes them (batch jobs, video, training, evaluation)."""
from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: int | None, unit: str, *, desc: str | None = None, initial: int = 0,
                 enabled: bool = True) -> Any:  # -> tqdm.tqdm
    """A progress bar on stderr of `total` units (None: unknown); disabled, it draws nothing but still counts."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, disable=not enabled,
                dynamic_ncols=True)


def progress_write(line: str) -> None:
    """One line on stderr above any progress bar (not torn through it)."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)
