"""`unilseg ray` refuses the escaping manifest rows as the local runner does (one job, one Ray start)."""
from __future__ import annotations

import csv
import json

import pytest

from fuzz.harness import MODEL
from fuzz.test_fuzz_manifests import ESCAPES, check_refused, escaping_rows

pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # starts Ray


def test_escaping_outputs_refused_on_ray(sandbox):
    """The three escaping rows and a symlinked folder fail as items; the good row is written by an actor."""
    from unilseg.cli.ray import main

    rows = escaping_rows(sandbox)
    manifest = sandbox.inp / "m.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("image", "expression", "output"), *rows])
    result = sandbox.run(["--manifest", str(manifest), "--sp", ".", "--actors", "1", "--cpus-per-actor", "1",
                          "--no-progress", *MODEL], 1, main=main)
    assert f"1 done, 0 skipped, {len(ESCAPES)} failed" in result.err
    rows = [json.loads(line) for line in (sandbox.out / "results.jsonl").read_text().splitlines()]
    check_refused(sandbox, rows)
