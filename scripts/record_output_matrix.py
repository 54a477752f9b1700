"""Record tests/fixtures/output_matrix.json: the output matrix's file names and digests (tests/output_matrix.py).

Run it only when an output is meant to change (and say so in the commit):
    PYTHONPATH=. python scripts/record_output_matrix.py
It first checks that no recorded mask has a pixel within MIN_MARGIN of the threshold (which another
CPU's last-bit float differences could flip); a case that has one must change its input or instruction.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from output_matrix import MIN_MARGIN, run_matrix, threshold_margins  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "output_matrix.json"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="unilseg-matrix-") as tmp:
        matrix = run_matrix(tmp)
        margins = threshold_margins(tmp)
    for case, margin in sorted(margins.items()):
        print(f"{case:20s} min |prob - threshold| = {margin:.2e}", file=sys.stderr)
    close = {case: m for case, m in margins.items() if not m > MIN_MARGIN}
    if close:
        print(f"error: masks within {MIN_MARGIN} of the threshold in {sorted(close)}: change those cases' inputs or "
              "instructions (tests/output_matrix.py)", file=sys.stderr)
        return 1
    FIXTURE.write_text(json.dumps(matrix, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE.relative_to(ROOT)}: {len(matrix)} cases, {sum(map(len, matrix.values()))} files",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
