"""`mythos-convert native OUT CKPT`: an HF Llama folder back to a native checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Argument

from mythos_convert.cli import options as o


def native(
    out: Annotated[Path, Argument(help="HF Llama folder (e.g. written by `mythos-convert hf`).")],
    ckpt: Annotated[Path, Argument(help="Native checkpoint to write (ckpt.pt).")],
    force: o.ForceOpt = False,
    quiet: o.QuietOpt = False,
) -> None:
    """Write a native checkpoint (reference layout, tokenizer embedded) from an HF Llama folder."""
    from mythos_convert.export.native import export_native
    from mythos_convert.support.ui import result

    result(str(export_native(out, ckpt, force=force)))
