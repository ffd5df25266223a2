"""push's verify check covers the MLX folders (`mlx-4bit/`) recorded in verify.json like the GGUF files."""

from __future__ import annotations

from pathlib import Path

from mythos_convert.hub.checks import check_verify
from mythos_convert.verify.record import file_digest, record_result


def _bind(folder: Path, names: list[str]) -> dict:
    return {n: file_digest(folder / n) for n in names}


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "model.safetensors").write_bytes(b"hf weights")
    (tmp_path / "mlx-4bit").mkdir()
    (tmp_path / "mlx-4bit" / "model.safetensors").write_bytes(b"mlx 4-bit weights")
    (tmp_path / "mlx-4bit" / "config.json").write_text('{"quantization": {"bits": 4}}')
    record_result(tmp_path, "hf", {"passed": True, "files": _bind(tmp_path, ["config.json", "model.safetensors"])})
    mlx = ["mlx-4bit/config.json", "mlx-4bit/model.safetensors"]
    record_result(tmp_path, "mlx-4bit/", {"passed": True, "files": _bind(tmp_path, mlx)})
    return tmp_path


UPLOADED = {"config.json", "model.safetensors", "mlx-4bit/config.json", "mlx-4bit/model.safetensors"}


def test_a_verified_mlx_folder_passes_the_push_check(tmp_path):
    assert check_verify(_folder(tmp_path), set(UPLOADED)) == []


def test_an_mlx_weight_changed_after_verify_is_refused_by_name(tmp_path):
    folder = _folder(tmp_path)
    (folder / "mlx-4bit" / "model.safetensors").write_bytes(b"mlx 4-bit weightz")  # same size, other bytes
    (problem,) = check_verify(folder, set(UPLOADED))
    assert problem.startswith("mlx-4bit/model.safetensors changed since `verify` checked it (mlx-4bit/)")


def test_a_failed_mlx_verify_is_refused(tmp_path):
    folder = _folder(tmp_path)
    record_result(folder, "mlx-4bit/", {"passed": False, "files": {}})
    assert check_verify(folder, set(UPLOADED)) == [
        "the last verify of mlx-4bit/ failed: fix the export and rerun verify"
    ]


def test_an_mlx_folder_left_out_of_the_push_is_not_checked(tmp_path):
    folder = _folder(tmp_path)
    record_result(folder, "mlx-4bit/", {"passed": False, "files": {}})
    assert check_verify(folder, {"config.json", "model.safetensors"}) == []
