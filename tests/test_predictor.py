"""Predictor: image encoded once, many texts batched; equal to the single-call path."""
import cv2
import numpy as np
import pytest
import torch
from conftest import FIXTURES

from unilseg.errors import UnilsegError
from unilseg.inference.predictor import Predictor
from unilseg.inference.transforms import postprocess, preprocess, read_image
from unilseg.model.tokenizer import tokenize

IMG = FIXTURES / "images/chelsea.png"
TEXTS = ["cat", "the left ear of the cat", "the wall behind", "all the whiskers"]


def single_path(model, text):
    image = read_image(IMG)
    x, inverse = preprocess(image, 480)
    with torch.inference_mode():
        logits = model(x, tokenize(text))
    return postprocess(logits, inverse, image.shape[:2], 0.35)


@pytest.mark.slow
def test_batched_texts_equal_one_at_a_time(seeded_model):
    predictor = Predictor(seeded_model)
    predictor.set_image(IMG)
    batched = predictor.predict(TEXTS)
    assert [p.text for p in batched] == TEXTS
    for text, pred in zip(TEXTS, batched):
        mask, prob = single_path(seeded_model, text)
        assert pred.prob.shape == (300, 451) and pred.mask.dtype == bool
        assert np.abs(pred.prob - prob).max() <= 1e-4
        assert (pred.mask != mask).mean() <= 1e-4
        expected_score = float(prob[mask].mean()) if mask.any() else 0.0
        assert abs(pred.score - expected_score) <= 1e-4


@pytest.mark.slow
def test_image_sources_and_colour_order(seeded_model):
    predictor = Predictor(seeded_model)
    predictor.set_image(IMG)
    ref = predictor.predict_logits("cat")
    bgr = cv2.imread(str(IMG))
    predictor.set_image(bgr, color="BGR")
    assert np.array_equal(predictor.predict_logits("cat"), ref)
    predictor.set_image(bgr[:, :, ::-1].copy(), color="RGB")
    assert np.array_equal(predictor.predict_logits("cat"), ref)
    from PIL import Image

    predictor.set_image(Image.open(IMG))
    assert np.array_equal(predictor.predict_logits("cat"), ref)


@pytest.mark.slow
def test_predict_before_set_image_raises(seeded_model):
    with pytest.raises(UnilsegError, match="set_image"):
        Predictor(seeded_model).predict("cat")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tiny import write_tiny_model

    from unilseg.model.build import load_model

    return load_model(*reversed(write_tiny_model(tmp_path_factory.mktemp("tiny"))))


def test_images_in_one_encoder_batch_equal_one_by_one(tiny_model):
    images = [read_image(FIXTURES / f"images/{n}.png") for n in ("chelsea", "coffee")]
    texts = ["the cat", "sky", "a red cup"]
    single = Predictor(tiny_model)
    batched = Predictor(tiny_model, max_batch=4)  # the first decoder batch mixes the two images
    embeddings = batched.embed(images)
    assert [e.image_size for e in embeddings] == [im.shape[:2] for im in images]
    pairs = [(i, t) for i in range(2) for t in texts]
    preds = batched.predict_pairs([embeddings[i] for i, _ in pairs], [t for _, t in pairs])
    for (i, text), pred in zip(pairs, preds):
        single.set_image(images[i])
        ref = single.predict(text)[0]
        assert pred.text == text and pred.prob.shape == images[i].shape[:2]
        assert np.abs(pred.prob - ref.prob).max() <= 1e-4 and abs(pred.score - ref.score) <= 1e-4
        assert np.abs(single.predict_logits(text) - batched.predict_logits(text, embeddings[i])).max() <= 1e-4


def test_empty_expression_and_bad_arguments(tiny_model):
    predictor = Predictor(tiny_model)
    predictor.set_image(IMG)
    with pytest.raises(UnilsegError, match="empty expression"):
        predictor.predict(["cat", "  "])
    with pytest.raises(UnilsegError, match="max_batch"):
        Predictor(tiny_model, max_batch=0)
    with pytest.raises(UnilsegError, match="uint8"):
        predictor.set_image(np.zeros((4, 4), np.float32))
    assert predictor.predict([]) == []


def test_public_names_resolve():
    import unilseg

    for name in unilseg.__all__:
        assert getattr(unilseg, name).__name__ == name
    assert "ImageEmbedding" in unilseg.__all__  # what Predictor.embed returns, for type hints
