"""Batch planning without a model: inputs, manifests, output names, shards, the results log."""
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from unilseg.batch import (
    Item,
    OutputOptions,
    ResultsLog,
    expand_images,
    parse_shard,
    plan_items,
    read_batch_manifest,
    read_expression_file,
    read_results,
    safe_stem,
    select_shard,
    slugify,
)
from unilseg.errors import UnilsegError
from unilseg.io.writers import encode_image, encode_mask, npy_bytes

# Characters no common file system (ext4, APFS, NTFS, FAT) objects to, with no case clash.
PORTABLE = re.compile(r"[a-z0-9-]+")


def test_slug_is_portable_and_distinguishes_texts():
    texts = ["The man in red", "the man, in red!", "café au lait", "a/b\\c:d*e?f\"g<h>i|j", "  ..  ", "一只猫",
             "一只狗", "CON", "x" * 300, "naïve résumé"]
    slugs = [slugify(t) for t in texts]
    for slug in slugs:
        assert PORTABLE.fullmatch(slug) and len(slug) <= 48 and not slug.startswith("-") and not slug.endswith("-")
    assert slugs[0] == slugs[1] == "the-man-in-red"
    assert slugs[2] == "cafe-au-lait" and slugs[9] == "naive-resume"
    assert slugs[5] != slugs[6]  # no ASCII at all: a hash keeps them apart
    assert slugify("一只猫") == slugs[5]  # and it is deterministic
    assert safe_stem("..hidden photo: #1") == "hidden_photo_1"
    assert re.fullmatch(r"[A-Za-z0-9._-]+", safe_stem("фото 2024")) and safe_stem("") == "image"


def test_names_and_collisions(tmp_path):
    pairs = [
        ("a/cat.jpg", "the dog", None),
        ("a/cat.jpg", "The dog!", None),  # same slug
        ("b/cat.png", "the dog", None),  # same stem, other directory
        ("b/Cat.png", "the dog", None),  # differs only in case: clashes on macOS/Windows
        ("a/cat.jpg", "the dog", None),  # exact repeat
        ("a/cat.jpg", "", None),
        ("c/x.jpg", "ears", "custom/ears.png"),
        ("c/x.jpg", "ears", "cat__the-dog__3.png"),  # an explicit name takes precedence over a derived one
    ]
    items = plan_items(pairs, tmp_path, OutputOptions(fmt="png"))
    names = [it.output.relative_to(tmp_path).as_posix() for it in items]
    assert names[:5] == ["cat__the-dog.png", "cat__the-dog__2.png", "cat__the-dog__4.png", "Cat__the-dog__5.png",
                         "cat__the-dog__6.png"]
    assert names[6] == "custom/ears.png" and names[7] == "cat__the-dog__3.png"
    assert [it.error is None for it in items] == [True] * 5 + [False, True, True]
    assert "empty expression" in items[5].error
    repeated = [*pairs, ("c/y.jpg", "ears", "custom/ears.png")]  # explicit output repeated: the job is refused
    with pytest.raises(UnilsegError, match=r"of item 8 \(y.jpg, 'ears'\) is also the output .* of item 6"):
        plan_items(repeated, tmp_path, OutputOptions(fmt="png"))
    ok = [it for it in items if it.error is None]
    assert len({str(it.output).casefold() for it in ok}) == len(ok)
    assert plan_items(pairs, tmp_path, OutputOptions(fmt="rle-json"))[0].output.name == "cat__the-dog.json"
    assert plan_items(pairs, tmp_path, OutputOptions(fmt="npy"))[0].output.name == "cat__the-dog.npy"


def test_sidecars_and_done(tmp_path):
    item = Item(0, "x.jpg", "dog", tmp_path / "x__dog.png").with_sidecars(OutputOptions(save_prob=True, overlay="jpg"))
    assert [p.name for p in item.outputs()] == ["x__dog.prob.npy", "x__dog.overlay.jpg", "x__dog.png"]
    assert not item.is_done()
    for p in item.outputs():
        p.write_bytes(b"x")
    assert not item.is_done()  # files there, but not whole: redone
    mask = np.zeros((4, 6), bool)
    item.prob_path.write_bytes(npy_bytes(mask.astype(np.float32)))
    item.overlay_path.write_bytes(encode_image("o.jpg", np.zeros((4, 6, 3), np.uint8)))
    item.output.write_bytes(encode_mask(mask, "png"))
    assert item.is_done()


def test_expand_images_file_dir_glob(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for name in ["b.JPG", "a.png", "notes.txt", ".hidden.png", "c.webp"]:
        (d / name).write_bytes(b"x")
    (d / "sub").mkdir()
    (d / "sub" / "z.png").write_bytes(b"x")
    assert [Path(p).name for p in expand_images([str(d)])] == ["a.png", "b.JPG", "c.webp"]
    assert [Path(p).name for p in expand_images([str(d / "*.png"), str(d / "sub" / "z.png")])] == ["a.png", "z.png"]
    assert [Path(p).name for p in expand_images([str(d / "**" / "*.png")])] == ["a.png", "z.png"]
    assert expand_images([str(d / "missing.jpg")]) == [str(d / "missing.jpg")]  # fails later, as an item
    with pytest.raises(UnilsegError, match="matches no images"):
        expand_images([str(d / "*.gif")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnilsegError, match="no images in this directory"):
        expand_images([str(tmp_path / "empty")])


def test_expression_file(tmp_path):
    f = tmp_path / "exps.txt"
    f.write_text("\ufeffthe dog\n\n  its left ear  \nthe leash\n", encoding="utf-8")
    assert read_expression_file(f) == ["the dog", "its left ear", "the leash"]
    f.write_text("\n \n")
    with pytest.raises(UnilsegError, match="no expressions"):
        read_expression_file(f)


def test_manifest_csv_and_jsonl(tmp_path):
    csv_path = tmp_path / "m.csv"
    csv_path.write_text('image,expression,output\nimgs/a.png,"the dog, left",\n/abs/b.png,cat,out/b.png\n')
    rows = read_batch_manifest(csv_path)
    assert [(r.image, r.expression, r.output) for r in rows] == [
        (str(tmp_path / "imgs/a.png"), "the dog, left", None), ("/abs/b.png", "cat", "out/b.png")]
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"image": "a.png", "expression": "dog"}\n\n{"image": "b.png", "expression": "", "output": "o"}\n')
    rows = read_batch_manifest(jsonl)
    assert [(Path(r.image).name, r.expression, r.output) for r in rows] == [("a.png", "dog", None), ("b.png", "", "o")]


@pytest.mark.parametrize("name, text, message", [
    ("m.jsonl", '{"image": "a.png", "expression": "dog"}\n{"image": "b.png", "expr\n', "line 2: not valid JSON"),
    ("m.csv", "path,text\na.png,dog\n", "must name `image` and `expression`"),
    ("m.jsonl", '{"expression": "dog"}\n', "line 1: no `image`"),
    ("m.jsonl", '{"image": "a.png", "expression": ["dog", "cat"], "output": "o.png"}\n',
     "line 1: `output` names one file but `expression` lists 2 texts"),
    ("m.jsonl", '{"image": "a.png", "expression": ["dog", 3]}\n', "must be text or a list of texts"),
])
def test_bad_manifests(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UnilsegError, match=message):
        read_batch_manifest(path)


@pytest.mark.parametrize("text", ["4/4", "1/0", "a/3", "-1/3", "2"])
def test_bad_shard(text):
    with pytest.raises(UnilsegError, match="I counts from 0"):
        parse_shard(text)


def test_shards_cover_every_item_once_and_keep_images_together(tmp_path):
    rng = random.Random(0)
    pairs = [(f"img{rng.randrange(30)}.png", f"exp {rng.randrange(5)}", None) for _ in range(200)]
    plan = plan_items(pairs, tmp_path)
    for count in (1, 2, 3, 7, 40):
        shards = [select_shard(plan, i, count) for i in range(count)]
        seen = [it.index for shard in shards for it in shard]
        assert sorted(seen) == list(range(len(plan)))
        owner = {it.image: i for i, shard in enumerate(shards) for it in shard}
        assert all(owner[it.image] == i for i, shard in enumerate(shards) for it in shard)
        assert select_shard(plan, 1 % count, count) == shards[1 % count]  # deterministic


def test_results_log_appends_and_compacts(tmp_path):
    plan = plan_items([("a.png", "x", None), ("b.png", "y", None)], tmp_path)
    path = tmp_path / "results.jsonl"
    log = ResultsLog(path)
    log.append({"output": str(plan[1].output), "error": "boom"})
    assert read_results(path) == [{"output": str(plan[1].output), "error": "boom"}]  # on disk at once
    log.append({"output": str(plan[0].output), "error": None})
    log.finish(plan)
    path.write_text(path.read_text() + '{"output": "torn')  # a killed run's last line
    log = ResultsLog(path, keep_existing=True)
    assert log.has_success(plan[0].output) and not log.has_success(plan[1].output)
    log.append({"output": str(plan[1].output), "error": None, "score": 0.5})
    log.finish(plan)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [{"output": str(plan[0].output), "error": None},
                    {"output": str(plan[1].output), "error": None, "score": 0.5}]
    ResultsLog(path).finish(plan)  # a fresh run starts a fresh log
    assert path.read_text() == ""


def test_a_training_manifest_is_a_batch_manifest(tmp_path):
    import json

    from unilseg.cli.data import export
    from unilseg.data.manifest import read_manifest as read_training_manifest

    path = tmp_path / "data" / "manifest.jsonl"
    assert export("synthetic:1:4:64", str(path)) == 4  # rows written
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    first["expression"] = [first["expression"], "another name for it"]
    path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    samples = read_training_manifest(path)
    rows = read_batch_manifest(path)  # a row per text; mask, granularity, source and id are ignored
    assert [r.expression for r in rows] == [t for s in samples for t in s.expressions] and len(rows) == 5
    assert [r.image for r in rows] == [str(s.image) for s in samples for _ in s.expressions]
    assert all(Path(r.image).is_file() and r.output is None for r in rows)
