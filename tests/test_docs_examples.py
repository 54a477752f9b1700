"""The docs' examples run: every `bash` and `python` block of docs/**/*.md, page by page, in a working directory
of example files (tests/docs_workspace.py), on the shipped demo model. The rules are tests/docs_blocks.py's; the
running is tests/docs_runner.py's. Blocks marked `# not tested: REASON` are listed in the terminal summary."""
from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import docs_workspace as workspace_module
import pytest
from docs_blocks import Block, docs_pages, extract_blocks, missing_output, orphan_outputs
from docs_runner import RESULTS, TIMEOUT, Outcome, example_env, run_page
from docs_workspace import build_workspace, listing

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MIN_RUNNABLE = 40  # the issue's bar: the docs' examples test runs at least this many blocks
PAGES = docs_pages(DOCS)


def page_blocks(page: Path) -> list[Block]:
    return extract_blocks(page, page.relative_to(ROOT) if page.is_relative_to(ROOT) else page)


@pytest.fixture(scope="session")
def docs_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("docs-workspace") / "files")


def run_in_workspace(blocks: list[Block], workspace: Path, tmp_path: Path, timeout: float = TIMEOUT) -> list[Outcome]:
    """A page's run: a fresh copy of the workspace, an empty UNILSEG_HOME, logs beside (not in) the directory."""
    shutil.copytree(workspace, tmp_path / "work")
    (tmp_path / "home").mkdir()
    return run_page(blocks, tmp_path / "work", tmp_path / "logs", example_env(tmp_path / "home"), timeout)


def failures(outcomes: list[Outcome]) -> str:
    failed = [o.message for o in outcomes if o.passed is False]
    ran = sum(o.passed is not None for o in outcomes)
    return f"{len(failed)} of {ran} blocks failed:\n\n" + "\n\n".join(failed) if failed else ""


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_page_examples_run(page: Path, docs_workspace: Path, tmp_path: Path) -> None:
    outcomes = run_in_workspace(page_blocks(page), docs_workspace, tmp_path)
    RESULTS.extend(outcomes)
    if failures(outcomes):
        pytest.fail(failures(outcomes), pytrace=False)  # the messages say where; this test's frame would not


def test_docs_have_enough_runnable_blocks() -> None:
    runnable = sum(b.not_tested is None for page in PAGES for b in page_blocks(page))
    assert runnable >= MIN_RUNNABLE, (
        f"docs/ has {runnable} runnable blocks (on {len(PAGES)} pages), need >= {MIN_RUNNABLE}")


def test_docs_marking_rules_hold() -> None:
    blocks = [b for page in PAGES for b in page_blocks(page)]
    assert [b.where for b in blocks if b.not_tested == ""] == [], "`# not tested:` must be followed by a reason"
    orphans = [o for page in PAGES for o in orphan_outputs(page, page.relative_to(ROOT))]
    assert orphans == [], 'a ```text title="Output"``` block must follow a bash or python block, or it is unchecked'


def test_workspace_holds_what_its_docstring_lists(docs_workspace: Path) -> None:
    """The table the page writer reads is the truth: each path of its first column is there, and nothing else."""
    cells = re.findall(r"^\| (`.+?`) \|", workspace_module.__doc__, re.MULTILINE)
    listed = [name for cell in cells for name in re.findall(r"`([^`]+)`", cell)]
    files = listing(docs_workspace)

    def names(name: str, file: str) -> bool:  # a file, a glob or a folder ("frames/")
        return Path(file).match(name) or (name.endswith("/") and file.startswith(name))

    assert [n for n in listed if not any(names(n, f) for f in files)] == []
    assert [f for f in files if not any(names(n, f) for n in listed)] == []
    assert len([f for f in files if f.startswith("frames/")]) == workspace_module.CLIP_FRAMES


SAMPLE = '''\
# A page

```bash title="first"
echo hello > greeting.txt
```

- in a list:

    ```python
    text = open("greeting.txt").read().strip()
    ```

```console
$ not an example
```

~~~python
# not tested: needs a CUDA GPU
import torch; torch.zeros(1, device="cuda")
~~~

```bash
# not tested:
```

````python
print(text.upper(), "```")
````


```text title="Output"
HELLO ...
```
'''


def test_extraction_follows_the_convention(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(SAMPLE)
    blocks = extract_blocks(page, Path("docs/page.md"))
    assert [(b.line, b.language, b.not_tested) for b in blocks] == [
        (3, "bash", None), (9, "python", None), (17, "python", "needs a CUDA GPU"), (22, "bash", ""),
        (26, "python", None)]
    assert blocks[1].code == 'text = open("greeting.txt").read().strip()\n'  # dedented out of the list
    assert blocks[4].code == 'print(text.upper(), "```")\n' and blocks[4].expected == ("HELLO ...",)
    assert [b.expected for b in blocks[:4]] == [None] * 4
    assert blocks[0].where == "docs/page.md:3" and blocks[2].first_line == "# not tested: needs a CUDA GPU"
    assert orphan_outputs(page) == []
    (tmp_path / "orphan.md").write_text('```console\n$ ls\n```\n\n```text title="Output"\nx\n```\n')
    assert orphan_outputs(tmp_path / "orphan.md") == [f"{tmp_path / 'orphan.md'}:5"]


def test_shown_output_is_matched_in_order_with_ellipses() -> None:
    out = "loading\nthe sky 0.97 True   \nall houses 0.91 True\ndone\n"
    assert missing_output(("the sky ... True", "done"), out) is None
    assert missing_output(("...houses...",), out) is None
    assert missing_output(("the sky 0.97 True",), out) is None  # trailing whitespace ignored
    assert missing_output(("done", "loading"), out) == "loading"  # order counts
    assert missing_output(("the sky",), out) == "the sky"  # whole lines, not substrings
    assert missing_output(("the sky (0.97)",), "the sky 0.97\n") == "the sky (0.97)"  # no regex in a line


def test_runner_carries_files_and_names_and_reports_failures(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(SAMPLE + textwrap.dedent('''
        ```python
        print(text)
        ```

        ```text title="Output"
        goodbye
        ```

        ```python
        import json
        json.loads(text)
        ```

        ```bash
        sleep 60 &
        echo started; false; echo never
        ```

        ```bash
        sleep 60
        ```
        '''))
    (tmp_path / "work").mkdir()
    blocks = extract_blocks(page)
    outcomes = run_page(blocks, tmp_path / "work", tmp_path / "logs", example_env(tmp_path / "home"), timeout=3)
    assert [o.passed for o in outcomes] == [True, True, None, None, True, False, False, False, False]
    shown, traceback, bash, slow = (o.message for o in outcomes[5:])
    assert f"{page}:{blocks[5].line} (python): 'print(text)'" in shown
    assert "lacks the shown line 'goodbye'" in shown and "\n    hello" in shown  # quotes the stdout
    assert f"{page}:{blocks[6].line} (python) (after an earlier failure on this page): 'import json'" in traceback
    assert "exit code 1" in traceback and "JSONDecodeError" in traceback
    assert f'File "{page}", line {blocks[6].line + 2}' in traceback  # the page's own line of json.loads
    assert f"{page}:{blocks[7].line} (bash)" in bash and "'sleep 60 &'" in bash and "exit code 1" in bash
    assert "ran past 3 s" in slow
    assert listing(tmp_path / "work") == ["greeting.txt"]  # logs are kept outside the working directory


@pytest.mark.slow
def test_runner_runs_the_demo_model_in_the_workspace(docs_workspace: Path, tmp_path: Path) -> None:
    """End to end on a throwaway page: the CLI, the Python API in one session, a shown output, a wrong one."""
    page = tmp_path / "try.md"
    page.write_text(textwrap.dedent('''\
        ```bash
        python -m unilseg --model unilseg-demo --img imgs/demo_scene.png --exp "the sky" --sp sky.png
        unilseg --model unilseg-demo --img photos/ --img "more/*.jpg" --exp-file questions.txt --sp masks/
        ls masks/*.png | wc -l
        ```

        ```text title="Output"
        18
        ```

        ```python
        import cv2, unilseg
        predictor = unilseg.load_predictor(model="unilseg-demo")
        predictor.set_image("photo.jpg")
        ```

        ```python
        sky = predictor.predict(["the sky"])[0]
        print(sky.text, sky.present, (sky.mask == (cv2.imread("sky.png", 0) > 0)).mean() > 0.99)
        ```

        ```text title="Output"
        the sky True True
        ```

        ```bash
        unilseg --model unilseg-demo --video clip.mp4 --exp "all trees" --sp video/ --format rle-json
        python -c "import cv2; print(cv2.imread('frames/000011.png').shape)"
        ```

        ```text title="Output"
        (192, 192, 4)
        ```
        '''))
    outcomes = run_in_workspace(extract_blocks(page), docs_workspace, tmp_path)
    assert [o.passed for o in outcomes[:3]] == [True, True, True], failures(outcomes)
    assert outcomes[3].passed is False and "lacks the shown line '(192, 192, 4)'" in outcomes[3].message
    assert "(192, 192, 3)" in outcomes[3].message
