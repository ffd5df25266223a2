"""`mythos-convert tokenizer train`: the reference's ByteLevel BPE, trained on cleaned data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Option, Typer

from mythos_convert.cli import options as o

app = Typer(help="Train and inspect tokenizers.", no_args_is_help=True)


@app.command("train")
def train(
    data: o.CorpusOpt = None,
    vocab_size: Annotated[int, Option(help="Vocabulary size incl. 5 specials and 256 bytes.")] = 2048,
    normalizer: Annotated[str, Option(help="none (NFKC is done in the data pipeline) or nfkc.")] = "none",
    out: Annotated[Path, Option(help="Output tokenizer.json.")] = Path("tokenizer.json"),
    force: o.ForceOpt = False,
    quiet: o.QuietOpt = False,
) -> None:
    """Train a ByteLevel BPE tokenizer (<unk> <bos> <eos> <pad> <sep> = ids 0..4).

    Example: mythos-convert tokenizer train --data corpus/ --vocab-size 3252 --out tokenizer.json
    """
    from mythos_convert.api import train_tokenizer_file
    from mythos_convert.support.ui import result

    tok = train_tokenizer_file(out, data, vocab_size=vocab_size, normalizer=normalizer, force=force)
    result(f"{out}  {tok.get_vocab_size(with_added_tokens=True)} tokens  normalizer {normalizer}")
