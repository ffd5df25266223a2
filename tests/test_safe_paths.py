"""safe_paths on its own: outputs over inputs through `..` and links, names leaving a folder, special files.

test_containment.py drives the commands end to end; these call the functions with paths built here.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from mythos_convert.errors import MythosError, UnsafePathError
from mythos_convert.support.safe_paths import (
    entry_problem,
    folder_files,
    inside,
    refuse_output_over_inputs,
    scan_folder,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "ckpt.pt").write_bytes(b"weights")
    (tmp_path / "other").mkdir()
    return tmp_path


def test_an_output_that_is_an_input_through_dotdot_is_refused(tree: Path):
    ckpt = tree / "run" / "ckpt.pt"
    with pytest.raises(MythosError, match=r"is the checkpoint .* it reads"):
        refuse_output_over_inputs(tree / "other" / ".." / "run" / "ckpt.pt", [("checkpoint", ckpt)])


def test_an_output_that_is_an_input_through_a_linked_folder_is_refused(tree: Path):
    (tree / "alias").symlink_to(tree / "run")
    with pytest.raises(MythosError, match="is the checkpoint"):
        refuse_output_over_inputs(tree / "alias" / "ckpt.pt", [("checkpoint", tree / "run" / "ckpt.pt")])
    with pytest.raises(MythosError, match="contains the checkpoint"):
        refuse_output_over_inputs(tree / "alias", [("checkpoint", tree / "run" / "ckpt.pt")])


def test_an_output_linked_to_an_input_file_is_refused(tree: Path):
    (tree / "out.pt").symlink_to(tree / "run" / "ckpt.pt")
    with pytest.raises(MythosError, match="is the checkpoint"):
        refuse_output_over_inputs(tree / "out.pt", [("checkpoint", tree / "run" / "ckpt.pt")])


def test_an_output_containing_an_input_is_refused_through_dotdot(tree: Path):
    with pytest.raises(
        MythosError, match=r"contains the checkpoint .* destroy its own input; choose an output outside it"
    ):
        refuse_output_over_inputs(
            tree / "other" / "..", [("tokenizer", None), ("checkpoint", tree / "run" / "ckpt.pt")]
        )


def test_an_output_inside_an_input_folder_is_refused_through_a_link(tree: Path):
    (tree / "other" / "into-run").symlink_to(tree / "run")
    with pytest.raises(MythosError, match="lies inside the data folder"):
        refuse_output_over_inputs(tree / "other" / "into-run" / "out", [("data", tree / "run")])


def test_outputs_beside_inputs_pass(tree: Path):
    ckpt = tree / "run" / "ckpt.pt"
    refuse_output_over_inputs(tree / "other" / "out", [("checkpoint", ckpt), ("tokenizer", None)])
    refuse_output_over_inputs(tree / "run" / "ckpt.pt.hf", [("checkpoint", ckpt)])  # a file is no folder
    refuse_output_over_inputs(tree / "run-hf", [("data", tree / "run")])  # a shared prefix is not inside


@pytest.mark.parametrize("name", ["../x.safetensors", "a/../../x", "/etc/passwd", "", "..\\x", "./."])
def test_names_that_leave_the_folder_are_refused(tmp_path: Path, name: str):
    with pytest.raises(
        UnsafePathError, match="points outside the folder: a model folder's files must name files inside it; re-export"
    ):
        inside(tmp_path, name, "shard")
    with pytest.raises(UnsafePathError, match=r"^file '"):
        inside(tmp_path, name)


def test_a_link_on_the_way_is_refused_and_plain_names_pass(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "sub" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(
        UnsafePathError, match=r"is a symbolic link \(to .*outside\).* replace it with the file itself$"
    ):
        inside(tmp_path, "sub/link/model.safetensors")
    assert inside(tmp_path, "sub/model.safetensors") == tmp_path / "sub" / "model.safetensors"
    assert inside(tmp_path, "./config.json") == tmp_path / "config.json"


def test_special_files_are_named(tmp_path: Path):
    os.mkfifo(tmp_path / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "sock"))
        assert entry_problem(tmp_path / "sock") == "a socket"
    finally:
        sock.close()
    assert entry_problem(tmp_path / "pipe") == "a named pipe"
    assert entry_problem(Path("/dev/null")) == "a device file"
    assert entry_problem(tmp_path / "absent") is None
    assert entry_problem(tmp_path) is None


def test_scan_lists_regular_files_skips_hidden_and_names_links(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "w.bin").write_bytes(b"")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x").write_text("")
    (tmp_path / ".tmp-file").write_text("")
    (tmp_path / "linked").symlink_to(tmp_path / "a")
    (tmp_path / "a" / "tok").symlink_to("/nowhere")
    files, unsafe = scan_folder(tmp_path)
    assert files == ["a/w.bin", "config.json"]
    assert unsafe == {"linked": f"a symbolic link (to {tmp_path / 'a'})", "a/tok": "a symbolic link (to /nowhere)"}
    with pytest.raises(UnsafePathError) as caught:
        folder_files(tmp_path)
    assert str(caught.value).startswith(
        f"{tmp_path} holds 2 entries that may not be read or published: a/tok is a symbolic link (to /nowhere); "
        "linked is a symbolic link"
    )
    (tmp_path / "linked").unlink()
    with pytest.raises(UnsafePathError, match="holds 1 entry that"):
        folder_files(tmp_path)
    (tmp_path / "a" / "tok").unlink()
    assert folder_files(tmp_path) == ["a/w.bin", "config.json"]
