"""The output matrix (tests/output_matrix.py) gives the recorded file names and digests
(tests/fixtures/output_matrix.json, written by scripts/record_output_matrix.py): a refactor that
moves code keeps every command's outputs. Needs ray and onnxruntime (scripts/install.sh installs them)."""
from __future__ import annotations

import json

import pytest
from conftest import FIXTURES
from output_matrix import CASES, compare, run_matrix

pytestmark = pytest.mark.slow  # every command's outputs, on the seeded full-size model, Ray and ONNX


def test_the_matrix_gives_the_recorded_names_and_digests(tmp_path, seeded_checkpoint):
    expected = json.loads((FIXTURES / "output_matrix.json").read_text())
    assert sorted(expected) == sorted(CASES), "the fixture and the matrix name different cases: re-record"
    actual = run_matrix(tmp_path, checkpoint=seeded_checkpoint)
    problems = compare(expected, actual)
    assert not problems, f"{len(problems)} differences from the recorded outputs:\n" + "\n".join(problems)
