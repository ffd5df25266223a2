"""`mythos-convert mlx FOLDER --bits 4,8`: MLX quantized folders of an HF export, made and checked by mlx-lm itself.

Quantization is mlx-lm's own (`mlx_lm.convert`, affine, group 64), run in the Python that has
mlx-lm, so the files are exactly what mlx-lm would write. Each folder is written to a temporary
sibling, verified there against the native engine in float32, given a card, and only then renamed
into place: a failed conversion or verification leaves nothing behind. Results go into the HF
folder's verify.json under `mlx-<bits>bit/`, bound to the sha256 of the folder's files (all but
its card) as the HF and GGUF results are, so the card's Parity table keeps them only while those
files are unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mythos_convert.errors import MythosError, VerificationFailed
from mythos_convert.mlx.folder import mlx_digests
from mythos_convert.mlx.runtime import mlx_python, run_worker
from mythos_convert.mlx.written import GROUP_SIZE, MLXWritten
from mythos_convert.support.atomic import atomic_dir, check_output_dir

BITS = (4, 8)  # the widths with a measured gate (mythos_convert/verify/gates.py)


def mlx_folder_name(bits: int) -> str:
    return f"mlx-{bits}bit"


def parse_bits(text: str) -> list[int]:
    """ "4,8" -> [4, 8]; anything but the supported widths is refused by name."""
    out: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part.isdigit() or int(part) not in BITS:
            raise MythosError(
                f"--bits {part or '(empty)'} is not supported: choose from {', '.join(map(str, BITS))} "
                "(a comma list, e.g. --bits 4,8)"
            )
        if int(part) not in out:
            out.append(int(part))
    return out


def _weights_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def export_mlx(
    folder: str | Path,
    bits: str = "4,8",
    *,
    force: bool = False,
    verify: bool = True,
    python: str | Path | None = None,
) -> list[MLXWritten]:
    """Write `FOLDER/mlx-<bits>bit/` for each width, each verified in mlx-lm unless `verify` is False.

    Raises:
        MythosError: not an HF export, no mlx-lm, an unsupported width, an existing output without
            force, or a folder that mlx-lm fails on.
        VerificationFailed: a folder that fails verification (unlike `hf` and `gguf`, nothing is
            written then: the folder is only moved into place once verified).
    """
    from mythos_convert.source import open_hf

    folder = Path(folder)
    widths = parse_bits(bits)
    source = open_hf(folder)
    interpreter = mlx_python(python)
    targets = {b: check_output_dir(folder / mlx_folder_name(b), force) for b in widths}
    reference = _reference(source) if verify else None
    written = []
    for b, target in targets.items():
        with atomic_dir(target, force) as tmp:
            staging = tmp / "mlx-lm"
            info = run_worker(interpreter, "convert", folder.resolve(), staging, b, GROUP_SIZE)
            for item in staging.iterdir():
                shutil.move(str(item), tmp / item.name)
            staging.rmdir()
            size = _weights_size(tmp)
            out = MLXWritten(b, target, size, size * 8 / source.config.num_parameters(), {"versions": info["versions"]})
            if reference is not None:
                out.verify = _verified(tmp, b, interpreter, reference)
                out.verify["files"] = mlx_digests(tmp, mlx_folder_name(b))  # bound as the card and push read it
            _write_card(tmp, out, folder.name)
        written.append(out)
    if reference is not None:
        from mythos_convert.verify.record import record_result

        for out in written:
            record_result(folder, mlx_folder_name(out.bits) + "/", out.verify)
    return written


def _reference(source) -> tuple[Any, list[list[int]]]:
    """The native engine in float32 on the folder's weights, and the verifier's sequences."""
    import torch

    from mythos_convert.formats.checkpoint import load_model
    from mythos_convert.mlx.parity import sequences

    config = source.config
    return load_model(source.as_checkpoint(), torch.float32), sequences(
        source.tokenizer()[0], config.vocab_size, config.max_seq_len
    )


def _verified(tmp: Path, bits: int, python: str, reference) -> dict[str, Any]:
    from mythos_convert.mlx.verify import verify_mlx

    model, seqs = reference
    result = verify_mlx(tmp, bits, python, model, seqs)
    if not result["passed"]:
        raise VerificationFailed(
            f"{mlx_folder_name(bits)} failed verification in mlx-lm ({'; '.join(result['failures'])}); "
            "nothing was written: report this as a bug",
            {mlx_folder_name(bits) + "/": result},
        )
    return result


def _write_card(tmp: Path, out: MLXWritten, source_name: str) -> None:
    from mythos_convert.mlx.card import mlx_card

    (tmp / "README.md").write_text(mlx_card(out, source_name))
