"""Library errors speak in the API's terms and carry the argument at fault; each front end words it."""
from __future__ import annotations

import pickle

import pytest
from tiny import write_images

from unilseg.__main__ import main
from unilseg.cli.fields import FLAGS
from unilseg.errors import CheckpointError, UnilsegError, WriteError, run_guarded, worded_as
from unilseg.inference.transforms import read_image
from unilseg.io.writers import check_file_target, mask_format_for
from unilseg.model.checkpoint import read_weights
from unilseg.tasks.video import FrameSelection


def test_message_is_the_api_s_and_worded_by_a_front_end():
    e = UnilsegError("{field} {path}: has the extension of {format} npy; drop {format}", field="output",
                     path="a{b}.png")
    assert str(e) == "output a{b}.png: has the extension of format npy; drop format"
    assert e.field == "output" and e.values == {"path": "a{b}.png"}
    assert e.worded({"output": "--sp", "format": "--format"}) == ("--sp a{b}.png: has the extension of --format npy; "
                                                                  "drop --format")
    plain = UnilsegError("a {brace} stays as it is")  # no field: the text is not a template
    assert str(plain) == plain.worded(FLAGS) == "a {brace} stays as it is" and plain.field is None


def test_text_made_of_an_error_inside_a_command_names_its_flags(capsys):
    """A failed item's line and results row are str(error) made mid-job: inside the command (run_guarded with
    its names) they name flags, as the command's own errors do; outside, the API's terms; nesting restores."""
    e = UnilsegError("{field} m.png is outside; outputs stay inside {out_dir}", field="output")
    seen = []
    assert run_guarded(lambda: seen.append(str(e)), names=FLAGS) == 0
    assert seen == ["output m.png is outside; outputs stay inside --sp"]
    assert str(e) == "output m.png is outside; outputs stay inside out_dir"
    with worded_as({"out_dir": "the folder"}):
        with worded_as(FLAGS):
            assert str(e).endswith("inside --sp")
        assert str(e).endswith("inside the folder")


def test_fields_and_exit_codes_survive_pickling():
    """Ray sends a worker's error to the driver pickled: the field and the subclass's exit code stay."""
    for e in (WriteError("{field} {path}: disk full", field="output", path="m.png"),
              CheckpointError("weights file not found: {path}; pass {field} PATH", field="weights", path="w.pth"),
              UnilsegError("plain")):
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e) and back.field == e.field
        assert back.worded(FLAGS) == e.worded(FLAGS) and getattr(back, "exit_code", 2) == getattr(e, "exit_code", 2)


def test_library_functions_name_their_arguments(tmp_path):
    with pytest.raises(UnilsegError) as e:
        read_image(tmp_path / "none.png")
    assert str(e.value) == f"image not found: {tmp_path / 'none.png'}; check the image path"
    assert e.value.field == "image"
    with pytest.raises(UnilsegError) as e:
        mask_format_for(tmp_path / "m.jpg", None)
    assert e.value.field == "output" and str(e.value).startswith(f"output {tmp_path / 'm.jpg'}: .jpg is a lossy")
    assert str(e.value).endswith("(or .npy / .json with format npy / rle-json)")
    with pytest.raises(UnilsegError, match="^mask .* is a directory; give a file path$") as e:
        check_file_target(tmp_path, "mask")
    assert e.value.field == "mask"
    with pytest.raises(CheckpointError, match="or pass weights PATH$") as e:
        read_weights(tmp_path / "w.pth")
    assert e.value.field == "weights"
    with pytest.raises(UnilsegError, match="^max_frames must be at least 1, not 0$"):
        FrameSelection(max_frames=0)


def test_the_command_line_names_its_flags(tmp_path, capsys):
    image = write_images(tmp_path, 1)[0]
    missing = tmp_path / "none.png"
    assert main(["--img", str(missing), "--exp", "the sky", "--sp", str(tmp_path / "m.png")]) == 2
    assert capsys.readouterr().err == f"error: image not found: {missing}; check the --img path\n"
    assert main(["--img", str(image), "--exp", "the sky", "--sp", str(tmp_path / "m.jpg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --sp {tmp_path / 'm.jpg'}: .jpg is a lossy image format") and "--format npy" in err
    assert main(["--video", str(tmp_path / "none.mp4"), "--exp", "the sky", "--sp", str(tmp_path / "v"),
                 "--max-frames", "0"]) == 2
    assert "--max-frames must be at least 1, not 0" in capsys.readouterr().err
