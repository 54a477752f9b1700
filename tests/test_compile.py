"""Compiled inference: `--compile` (torch.compile) and `--runtime aoti` (AOTInductor packages).

Compiling costs about the same for the tiny config as for the full model (the kernel count,
not the tensor sizes, sets it: 1-3 min per graph on 2 cores), so the file compiles once
each: the full seeded model with torch.compile, fp32 (the golden cases compile its batch-1
graphs, the recompilation test adds its dynamic decoder graph), and the tiny config's two
AOTI packages through the CLI. The refusal tests compile nothing. The file took 8.5 min on
the 2-core machine at load average 2-4 (13 min at 5-7): 3.7 min the golden cases (the
compile), 2.7 min the recompilation test, 1.9 min the AOTI export. Set
TORCHINDUCTOR_CACHE_DIR to keep the inductor cache between runs.
"""
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import FIXTURES, golden_cases
from tiny import write_images, write_tiny_model

from unilseg.cli.export import main as export_main
from unilseg.cli.segment import main
from unilseg.export import EXPORT_FILE, ExportInfo, read_info, write_info
from unilseg.export.aoti import FILES, machine_fingerprint
from unilseg.inference.backends import load_backend
from unilseg.inference.predictor import Predictor, to_prediction
from unilseg.model.build import load_model

CASES = golden_cases()
REEXPORT = "re-export with `unilseg export --format aoti`"


@pytest.fixture(scope="module", autouse=True)
def inductor_cache(tmp_path_factory):
    """A fresh inductor cache for this module unless TORCHINDUCTOR_CACHE_DIR names one."""
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
            mp.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.mktemp("inductor")))
        yield


def graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@pytest.fixture(scope="module")
def compiled(seeded_model):
    """(eager, compiled) Predictors over the full seeded model, fp32."""
    return Predictor(seeded_model), Predictor(seeded_model, compile=True)


@pytest.mark.slow
def test_compiled_matches_golden(compiled):
    _, predictor = compiled
    for case in CASES:
        predictor.set_image(FIXTURES / case["img"])
        logits = predictor.predict_logits(case["exp"])
        assert np.abs(logits - np.load(FIXTURES / f"{case['name']}.logits.npy")).max() <= 1e-3
        mask = to_prediction(case["exp"], logits[0], predictor.embedding, predictor.threshold).mask
        expected = cv2.imread(str(FIXTURES / f"{case['name']}.mask.png"), cv2.IMREAD_UNCHANGED) > 0
        assert mask.shape == expected.shape and (mask != expected).mean() <= 1e-3


@pytest.mark.slow
def test_ten_items_of_one_to_four_texts_compile_at_most_once_more(compiled):
    """Batch size 1 compiles each part once (done here first, as the golden test also does); pairs
    batches of 2-4 add one dynamic decoder graph, and nothing per item after it."""
    eager, predictor = compiled
    predictor.max_batch = eager.max_batch = 4
    images = [FIXTURES / c["img"] for c in CASES]
    words = ["cat", "the face", "a cup", "the wooden table"]
    predictor.set_image(images[0])
    predictor.predict_logits(words[:1])  # batch 1: so the test does not depend on running after the golden one
    before = graphs_compiled()
    for i in range(10):
        texts = words[: 1 + i % 4]
        predictor.set_image(images[i % len(images)])
        logits = predictor.predict_logits(texts)
        if i == 3:  # a 4-pair batch against eager
            eager.set_image(images[i % len(images)])
            assert np.abs(logits - eager.predict_logits(texts)).max() <= 1e-3
    assert graphs_compiled() - before <= 1


@pytest.mark.slow
def test_compile_uses_the_user_cache(monkeypatch, tmp_path, seeded_model):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setenv("UNILSEG_HOME", str(tmp_path))
    Predictor(seeded_model, compile=True)  # compiling waits for the first call
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    config, weights = write_tiny_model(root)
    return config, weights, write_images(root / "images", 3)


@pytest.fixture(scope="module")
def aoti_dir(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny-aoti"
    assert export_main(["--format", "aoti", "--config", str(tiny[0]), "--weights", str(tiny[1]), "--device", "cpu",
                        "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_export_aoti_writes_packages_and_fingerprint(aoti_dir):
    info = read_info(aoti_dir, "aoti")
    assert info.variant == "fp32" and info.files == FILES
    assert load_backend("aoti", weights=str(aoti_dir), device="cpu").precision == "fp32"
    assert info.extra["fingerprint"] == machine_fingerprint(torch.device("cpu"))
    assert info.extra["sizes"] == {role: (aoti_dir / name).stat().st_size for role, name in FILES.items()}


@pytest.mark.slow
def test_aoti_matches_eager(tiny, aoti_dir):
    eager = Predictor(load_model(tiny[1], tiny[0]))
    aoti = Predictor(load_backend("aoti", weights=str(aoti_dir), device="cpu"), max_batch=3)
    texts = ["a red ball", "sky", "the thing on the left"]
    embeddings = [eager.embed([image])[0] for image in tiny[2]]
    for image, embedding in zip(tiny[2], embeddings):
        aoti.set_image(image)
        logits = aoti.predict_logits(texts)
        assert np.abs(logits - eager.predict_logits(texts, embedding)).max() <= 1e-3
    # two images in one Swin batch, pairs of several images in one decoder batch
    pairs = aoti.embed(tiny[2][:2])
    assert np.abs(aoti.pair_logits(pairs, texts[:2]) - eager.pair_logits(embeddings[:2], texts[:2])).max() <= 1e-3


@pytest.mark.slow
def test_segment_cli_with_runtime_aoti(capsys, tiny, aoti_dir, tmp_path):
    out = tmp_path / "mask.png"
    code = main(["--img", str(tiny[2][0]), "--exp", "a red ball", "--sp", str(out), "--runtime", "aoti",
                 "--weights", str(aoti_dir), "--device", "cpu"])
    assert code == 0 and out.is_file(), capsys.readouterr().err


def refused(capsys, directory, *extra) -> str:
    """Run a segment call on `directory` -> its one stderr line (exit code 2 asserted)."""
    code = main(["--img", str(FIXTURES / "images/chelsea.png"), "--exp", "cat", "--sp", str(directory / "mask.png"),
                 "--runtime", "aoti", "--weights", str(directory), "--device", "cpu", *extra])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    return err[0]


def fake_export(directory, fingerprint: dict, content: bytes, sizes: bool = True) -> None:
    """An export directory holding `content` as both packages."""
    directory.mkdir()
    for name in FILES.values():
        (directory / name).write_bytes(content)
    from tiny import TINY_CONFIG

    from unilseg.model.spec import InferenceSpec

    extra = {"fingerprint": fingerprint, "sizes": {role: len(content) for role in FILES} if sizes else {}}
    write_info(directory, ExportInfo("aoti", "fp32", dict(FILES), InferenceSpec.from_config(TINY_CONFIG),
                                     extra=extra))


@pytest.mark.parametrize("change", [{"torch": "2.0.0"}, {"isa": "NEON"}, {"machine": "aarch64"}])
def test_foreign_package_refused(capsys, tmp_path, change):
    fake_export(tmp_path / "x", {**machine_fingerprint(torch.device("cpu")), **change}, b"PK\x03\x04")
    line = refused(capsys, tmp_path / "x")
    assert line.startswith("error: ") and "another machine" in line and line.endswith(REEXPORT)


def test_garbage_package_refused(capsys, tmp_path):
    fake_export(tmp_path / "x", machine_fingerprint(torch.device("cpu")), b"not a zip file\n" * 100, sizes=False)
    line = refused(capsys, tmp_path / "x")
    assert line.startswith("error: cannot load ") and line.endswith(REEXPORT)


@pytest.mark.slow
def test_truncated_package_refused(capsys, aoti_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(aoti_dir, broken)
    path = broken / FILES["prompt_decoder"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "damaged" in refused(capsys, broken) and REEXPORT in refused(capsys, broken)
    # the same truncation with the recorded sizes edited to match: the loader itself refuses it
    raw = json.loads((broken / EXPORT_FILE).read_text())
    raw["extra"]["sizes"]["prompt_decoder"] = path.stat().st_size
    (broken / EXPORT_FILE).write_text(json.dumps(raw))
    assert refused(capsys, broken).endswith(REEXPORT)


def test_compile_refused_with_an_export(capsys, tmp_path):
    fake_export(tmp_path / "x", machine_fingerprint(torch.device("cpu")), b"PK")
    assert "--compile applies to --runtime torch" in refused(capsys, tmp_path / "x", "--compile")
