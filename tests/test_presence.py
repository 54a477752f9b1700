"""Presence scores and no-target instructions: the pieces of absent-target handling on main so far."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unilseg.data.sources import open_samples, train_dataset
from unilseg.data.synthetic import NO_TARGET, absent_instructions, generate_scene, make_sample
from unilseg.errors import UnilsegError
from unilseg.inference import load_predictor
from unilseg.inference.presence import STATISTICS, presence_score
from unilseg.model.spec import InferenceSpec

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "unilseg" / "demo" / "examples"


def test_absent_zero_keeps_the_old_draws():
    for index in range(20):
        a, b = make_sample(0, index, 3), make_sample(0, index, 3, absent=0.0)
        assert a.text == b.text and np.array_equal(a.mask, b.mask)


def test_absent_draws_name_nothing_in_their_scene():
    empty = [make_sample(0, i, 0, absent=0.5) for i in range(60)]
    empty = [s for s in empty if s.granularity == NO_TARGET]
    assert 15 <= len(empty) <= 45  # about half
    checked = 0
    for s in empty:
        assert not s.mask.any()
        words = s.text.split()
        if len(words) == 3 and words[2] in ("house", "tree", "car", "ball"):  # "the purple car"
            assert (words[2], words[1]) not in {(o.kind, o.color) for o in s.scene.objects}, s.text
            checked += 1
        if words[:2] in (["all", "the"], ["every"]) and len(words) == 3:  # "all the cars", "every car"
            assert all(o.kind not in words[-1] for o in s.scene.objects), s.text
    assert checked


def test_absent_instructions_cover_every_granularity():
    options = absent_instructions(generate_scene(0, 4))
    assert all(options[g] for g in ("object", "part", "group", "stuff"))
    texts = {t.text for alts in options["object"] for t in alts}
    scene = generate_scene(0, 4)
    for o in scene.objects:
        assert f"the {o.color} {o.kind}" not in texts


def test_no_target_evaluation_samples_keep_the_present_ones():
    plain, more = open_samples("synthetic:6:2"), open_samples("synthetic:6:2:absent=1")
    assert len(more) == len(plain) + 6
    present = [s for s in more if s.granularity != NO_TARGET]
    assert [s.expressions for s in present] == [s.expressions for s in plain]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(present, plain))
    absent = [s for s in more if s.granularity == NO_TARGET]
    assert len(absent) == 6 and not any(s.mask.any() for s in absent)
    assert {s.meta["phrasing"] for s in absent} <= {"object", "part", "group", "stuff"}


@pytest.mark.parametrize("spec", ["synthetic:6:2:absent=x", "synthetic:6:2:absent=99", "synthetic:6:absent=1:2"])
def test_bad_absent_specs_are_refused(spec):
    with pytest.raises(UnilsegError, match="bad data spec"):
        open_samples(spec)


def test_absent_share_is_for_generated_scenes_only(tmp_path):
    with pytest.raises(UnilsegError, match="absent_share"):
        train_dataset("synthetic:4:0", InferenceSpec(size=64), absent_share=1.5)
    with pytest.raises(UnilsegError, match="generated scenes"):
        train_dataset(str(tmp_path / "m.jsonl"), InferenceSpec(size=64), absent_share=0.2)


def test_statistics_are_in_range_and_ordered():
    rng = np.random.default_rng(0)
    prob = rng.random((40, 50)).astype(np.float32) * 0.3
    prob[5:10, 5:10] = 0.9
    mask = prob > 0.35
    values = {name: presence_score(prob, mask, name) for name in STATISTICS}
    assert all(0.0 <= v <= 1.0 for v in values.values())
    assert values["peak"] == pytest.approx(0.9)
    assert values["peak"] >= values["top1%"] >= values["top5%"]
    assert values["mask mean"] == pytest.approx(0.9)
    assert presence_score(np.full((4, 4), 1.2, np.float32), np.ones((4, 4), bool)) == 1.0  # overshoot clipped


def test_min_score_empties_masks_below_it_and_keeps_those_above():
    predictor = load_predictor(model="unilseg-demo", device="cpu", threads=1, min_score=0)  # off: its own 0.8
    predictor.set_image(str(sorted(EXAMPLES.glob("*.png"))[0]))
    texts = ["the sky", "the ground", "the boat", "the purple house"]
    free = predictor.predict(texts)
    assert predictor.min_score is None and all(p.present for p in free)
    scores = sorted(p.presence for p in free)
    gaps = [(b - a, (a + b) / 2) for a, b in zip(scores, scores[1:])]
    cut = max(gaps)[1]  # between two measured scores, so no mask sits at the cut
    kept = predictor.predict(texts, min_score=cut)
    for before, after in zip(free, kept):
        assert after.presence == pytest.approx(before.presence)
        if before.presence >= cut:
            assert after.present and np.array_equal(after.mask, before.mask)
        else:
            assert not after.present and not after.mask.any() and after.score == 0.0
    assert any(p.present for p in kept) and not all(p.present for p in kept)
    off = predictor.predict(texts, min_score=0)
    assert all(p.present for p in off)


def test_min_score_in_the_spec_is_checked():
    assert InferenceSpec.from_config({"test": {"min_score": 0.4}}).min_score == 0.4
    assert InferenceSpec().with_min_score(0).min_score is None  # 0 turns it off
    for bad in (-0.1, 1.5, "x", float("nan"), True):
        with pytest.raises(UnilsegError, match="min_score"):
            InferenceSpec.from_config({"test": {"min_score": bad}})
