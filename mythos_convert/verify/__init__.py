"""Parity checks of exports against the native model: `verify(target)` picks the verifier by target.

An HF folder goes to `mythos_convert.verify.hf.verify_hf`, a `.gguf` file to
`mythos_convert.verify.gguf.verify_gguf`. Both record their result in the folder's verify.json.
Imports are lazy: `mythos_convert.verify.record` must stay cheap to import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mythos_convert.errors import MythosError
from mythos_convert.support.safe_paths import require_file


def verify(
    target: str | Path,
    ckpt: str | Path | None = None,
    *,
    tokenizer: str | Path | None = None,
    config_yaml: str | Path | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Verify an exported HF folder or GGUF file against a native checkpoint.

    Args:
        target: an HF folder written by `mythos-convert hf`, or a `.gguf` file.
        ckpt: the native checkpoint (default: the source recorded at export time, if it still exists).
        tokenizer: tokenizer.json of the native model (default: beside ckpt, else inside it).
        config_yaml: YAML `model:` config for checkpoints without an embedded config.

    Returns:
        The result dict (also recorded in verify.json); `passed` says whether it met its tolerance.
    """
    target = Path(target)
    if target.suffix == ".gguf":
        require_file(target, "GGUF file", "pass the path of a .gguf file")
        from mythos_convert.verify.gguf import verify_gguf

        return verify_gguf(target, ckpt, tokenizer=tokenizer, config_yaml=config_yaml, **kwargs)
    if not target.is_dir():
        raise MythosError(f"{target} is neither an exported folder nor a .gguf file: pass what `hf`/`gguf` wrote")
    from mythos_convert.verify.digests import Digests

    # hashing starts before torch and transformers are imported: it runs on the other core meanwhile
    with Digests(target, source=ckpt) as digests:
        from mythos_convert.data.tokenizer import load_tokenizer
        from mythos_convert.verify.hf import verify_hf

        tok = load_tokenizer(tokenizer) if tokenizer is not None else None
        return verify_hf(target, ckpt, tokenizer=tok, config_yaml=config_yaml, digests=digests, **kwargs)
