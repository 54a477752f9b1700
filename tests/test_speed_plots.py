"""benchmarks/_common.save_results and scripts/speed_plots.py on documents it writes (synthetic numbers, no model)."""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import os
import struct
import sys
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT

PLOTS = ("throughput", "onnx_runtime", "startup")
EXPRESSIONS = {"fp32": {"single": 4.71, "k": {1: 4.65, 4: 12.08, 8: 21.92, "8, one decoder batch": 25.5}},
               "bf16": {"single": 2.01, "k": {1: 2.14, 4: 5.44, 8: 10.32}}}
RUNTIMES = {"torch-fp32": (2.29, 10.44), "torch-bf16": (1.01, 4.92), "ort-fp32": (1.37, 6.31), "ort-int8": (0.87, 4.35)}
STARTUP = [{"weights": ".pth", "size_gb": 1.131, "cold_wall_s": 6.04, "peak_rss_gb": 1.9, "load_wall_s": 0.12,
            "load_rss_added_gb": 0.01},
           {"weights": ".safetensors", "size_gb": 0.794, "cold_wall_s": 5.93, "peak_rss_gb": 1.85, "load_wall_s": 0.08,
            "load_rss_added_gb": 0.03}]


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The benchmark modules (`from _common import ...` needs benchmarks/ on the path while they import)."""
    monkeypatch.setattr(sys, "path", [str(ROOT / "benchmarks"), *sys.path])
    return {name: importlib.import_module(name) for name in ("_common", "throughput", "onnx_runtime")}


@pytest.fixture(scope="module")
def speed_plots():
    spec = importlib.util.spec_from_file_location("speed_plots", ROOT / "scripts" / "speed_plots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save(bench: dict, monkeypatch: pytest.MonkeyPatch, folder: Path, name: str, rows: list[dict], **opts) -> dict:
    """save_results as benchmarks/NAME.py --json FOLDER/NAME.json with `opts` would call it."""
    path = folder / f"{name}.json"
    argv = [f"benchmarks/{name}.py", *(w for k, v in opts.items() for w in (f"--{k}", str(v))), "--json", str(path)]
    monkeypatch.setattr(sys, "argv", argv)
    return bench["_common"].save_results(path, name, rows, argparse.Namespace(**opts, json=path))


def write_inputs(bench: dict, monkeypatch: pytest.MonkeyPatch, folder: Path) -> dict[str, str]:
    """The three plotted documents, their rows made by the benchmarks' own row builders where they have them
    -> {name: the table that benchmark prints from those rows}."""
    tp, ort = bench["throughput"], bench["onnx_runtime"]
    rows = tp.expression_rows(EXPRESSIONS)
    tables = {"throughput": tp.expressions_table(rows)}
    rows.append(tp.image_row({"one": 9.3, "all": 97.6, "separate": 211.4}, {"forward": 4.8, "whole": 5.05}, 20, "fp32"))
    save(bench, monkeypatch, folder, "throughput", rows, repeat=2, threads=1, clock="cpu")

    times = {(r, case): t for r, ts in RUNTIMES.items() for case, t in zip(("forward", ort.texts_case(8)), ts)}
    rows = ort.runtime_rows(times, list(RUNTIMES), 8)
    tables["onnx_runtime"] = ort.runtimes_table(rows)
    rows += [{"table": "int8_iou", "case": "astronaut_face", "iou": 0.9712, "fp32_pixels": 5230},
             {"table": "cold_cli", "call": "ORT int8", "wall_s": 3.21, "import_torch_s": 1.48, "peak_rss_gb": 1.02}]
    save(bench, monkeypatch, folder, "onnx_runtime", rows, repeat=3)
    save(bench, monkeypatch, folder, "startup", STARTUP, repeat=3, size=480)
    return tables


def png_chunks(data: bytes) -> list[str]:
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunks.append(kind.decode())
        pos += 12 + length
    return chunks


def test_save_results_records_the_command_the_machine_and_the_rows(tmp_path, bench, monkeypatch):
    import torch

    rows = [{"weights": ".pth", "cold_wall_s": 1 / 3, "runs": [0.1234567891, 2.0]}]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    doc = save(bench, monkeypatch, tmp_path / "new", "startup", rows, repeat=1, workdir=Path("/tmp/bench"))
    assert json.loads((tmp_path / "new/startup.json").read_text()) == doc
    assert doc["name"] == "startup" and doc["format"] == 1
    json_path = tmp_path / "new/startup.json"
    assert doc["command"] == f"python benchmarks/startup.py --repeat 1 --workdir /tmp/bench --json {json_path}"
    assert doc["args"]["workdir"] == "/tmp/bench" and doc["args"]["repeat"] == 1
    assert datetime.fromisoformat(doc["date"]).utcoffset().total_seconds() == 0
    assert doc["rows"] == [{"weights": ".pth", "cold_wall_s": 0.333333, "runs": [0.123457, 2.0]}]

    m = doc["machine"]
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    assert m["cpu"] == next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    flags = next(line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags"))
    assert m["flags"] == {f: f in flags for f in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
                                                   "amx_int8")}
    assert m["cores"] == os.cpu_count()
    assert m["mkldnn_bf16"] is torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert m["torch_threads"] == torch.get_num_threads()
    assert m["omp_num_threads"] == "3"
    assert m["torch"] == torch.__version__
    ort = importlib.util.find_spec("onnxruntime")
    assert m["onnxruntime"] == (importlib.import_module("onnxruntime").__version__ if ort else None)
    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)  # not imported: the installed distribution's
    assert bench["_common"].machine()["onnxruntime"] == (importlib.metadata.version("onnxruntime") if ort else None)


def test_machine_reads_the_first_processor_and_leaves_torch_unimported(tmp_path, bench, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Example CPU 9000\nflags\t\t: fpu avx512f avx512_vnni amx_tile\n\n"
                       "processor\t: 1\nmodel name\t: Other CPU\nflags\t\t: fpu avx512_bf16\n")
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    m = bench["_common"].machine(cpuinfo)
    assert "torch" not in sys.modules
    assert m["cpu"] == "Example CPU 9000"
    assert m["flags"] == {"avx512f": True, "avx512_vnni": True, "avx512_bf16": False, "amx_tile": True,
                          "amx_bf16": False, "amx_int8": False}
    assert m["mkldnn_bf16"] is None and m["torch_threads"] is None


def test_plots_and_tables_come_from_the_same_documents(tmp_path, bench, monkeypatch, capsys, speed_plots):
    results = tmp_path / "results"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    benchmark_tables = write_inputs(bench, monkeypatch, results)
    slim = [{"table": "size", "venv": "slim", "mb": 231.4, "torch_mb": None},
            {"table": "size", "venv": "full", "mb": 5120.9, "torch_mb": 4210.2},
            {"table": "cold", "runtime": "ORT int8", "venv": "slim", "wall_s": 2.41, "peak_rss_gb": 0.81,
             "vs_torch_fp32": 0.52, "vs_authors": 0.1},
            {"table": "masks", "variant": "int8", "byte_equal": True}]
    save(bench, monkeypatch, results, "slim_runtime", slim, repeat=3, authors=24.4)
    capsys.readouterr()
    assert speed_plots.main(["--results", str(results), "--out", str(tmp_path / "img")]) == 0
    out, err = capsys.readouterr()

    for name in PLOTS:
        data = (tmp_path / "img" / f"speed_{name}.png").read_bytes()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert image.shape[:2] == (400, 700)
        assert not {"tEXt", "iTXt", "zTXt", "tIME"} & set(png_chunks(data))  # nothing that varies between runs
        assert f"wrote {tmp_path / 'img'}/speed_{name}.png" in err
    # the docs' table is the one the benchmark prints, row for row
    for name, table in benchmark_tables.items():
        assert table.strip() in out, name
    for r in STARTUP:
        assert (f"| {r['weights']} ({r['size_gb']:.2f} GB) | {r['cold_wall_s']:.2f} s | {r['peak_rss_gb']:.2f} GB "
                f"| {r['load_wall_s']:.2f} s | {r['load_rss_added_gb']:.2f} GB |") in out
    marginal = (97.6 - 9.3) / 19
    assert f"| one process, 20 images | 97.6 s | {marginal:.2f} s (marginal) |" in out
    assert "| astronaut_face | 0.971 | 5230 |" in out and "| ORT int8 | 3.21 | 1.48 | 1.02 |" in out
    assert "| slim | 231 MB |" in out and "| full | 5121 MB (torch, its CUDA libraries and triton: 4210 MB) |" in out
    assert "| ORT int8 | slim | 2.41 | 0.81 | 0.52x | 0.10x |" in out and "vs the authors' script (24.4 s)" in out
    assert "ORT int8: masks byte-equal between the slim and the full venv: yes" in out
    assert not (tmp_path / "img" / "speed_slim_runtime.png").exists()  # tables only
    # the command as run, the thread count its children got in front, --json left out
    assert "`OMP_NUM_THREADS=1 python benchmarks/startup.py --repeat 3 --size 480` on " in out

    # the same documents make the same bytes
    assert speed_plots.main(["--results", str(results), "--out", str(tmp_path / "again")]) == 0
    for name in PLOTS:
        png = f"speed_{name}.png"
        assert (tmp_path / "again" / png).read_bytes() == (tmp_path / "img" / png).read_bytes()


def test_missing_inputs_are_skipped_with_a_note(tmp_path, bench, monkeypatch, capsys, speed_plots):
    results = tmp_path / "results"
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    save(bench, monkeypatch, results, "startup", STARTUP, repeat=3, size=480)
    assert speed_plots.main(["--results", str(results), "--out", str(tmp_path / "img")]) == 0
    out, err = capsys.readouterr()
    assert [p.name for p in (tmp_path / "img").iterdir()] == ["speed_startup.png"]
    for name in ("throughput", "onnx_runtime", "slim_runtime"):
        assert f"speed_plots: no {results / name}.json, skipped\n" in err
    assert "| .pth (1.13 GB) | 6.04 s |" in out and "`python benchmarks/startup.py --repeat 3 --size 480` on" in out

    (results / "throughput.json").write_text((results / "startup.json").read_text())
    with pytest.raises(SystemExit):
        speed_plots.main(["--results", str(results), "--out", str(tmp_path / "img")])
    assert "holds the results of 'startup', not 'throughput'" in capsys.readouterr().err
    assert speed_plots.main(["--results", str(tmp_path / "empty"), "--out", str(tmp_path / "img")]) == 1
