"""The options several commands share, and the long help texts, defined once.

A command module is then its signature, one library call and the printing of what the library
rendered. Nothing here imports torch: the CLI starts without it (tests/test_cli.py checks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from typer import Argument, Option


def apply_quiet(quiet: bool) -> bool:
    """--quiet's callback: commands take it too, so it works after the command name as well as before it.

    Returns the value, which click keeps as the option's value.
    """
    if quiet:
        from mythos_convert.support.ui import set_quiet

        set_quiet(True)
    return quiet


# --- shared by several commands ---------------------------------------------------------------
CheckpointArg = Annotated[Path, Argument(help="Native checkpoint (ckpt.pt), ours or the reference's.")]
TokenizerOpt = Annotated[
    Path | None, Option(help="tokenizer.json (default: beside the checkpoint, else the copy inside it).")
]
ConfigOpt = Annotated[Path | None, Option(help="YAML with a `model:` mapping, for checkpoints without a config.")]
ForceOpt = Annotated[bool, Option("--force", help="Replace an existing output (atomically).")]
ChunksOpt = Annotated[int | None, Option(help="At most this many windows (default: all).")]
QuietOpt = Annotated[bool, Option("--quiet", "-q", help="No progress bars or chatter.", callback=apply_quiet)]
DebugOpt = Annotated[bool, Option("--debug", help="Show tracebacks for errors.")]
CorpusOpt = Annotated[
    list[Path] | None,
    Option(help="Text, JSONL (`text`) or Parquet files or folders; repeat. Default: embedded corpus."),
]
# The Hub options of `push` and `space`: each command words its help for what it publishes.
TokenOpt = Annotated[str | None, Option(help="Write token (default: HF_TOKEN or `hf auth login`).")]
EndpointOpt = Annotated[str | None, Option(help="Hub URL (default: HF_ENDPOINT or huggingface.co).")]


def repo_option(help: str) -> Any:
    """--repo, the Hub repo id to publish to."""
    return Option("--repo", help=help)


def dry_run_option(help: str) -> Any:
    """--dry-run: show the upload, upload nothing."""
    return Option("--dry-run", help=help)


# --- train ------------------------------------------------------------------------------------
PRESET = "tiny, mythos-172m, mythos-500m, mythos-1b or a preset YAML file (default: tiny)."
TRAIN_TOKENIZER = "Use this tokenizer.json instead of training one on the data."
STRATEGY = "single (one process), ddp (replicas under torchrun) or fsdp (FSDP2 shards under torchrun)."
FORMAT = "pt (one ckpt.pt) or dcp (a torch.distributed.checkpoint folder, ckpt-dcp/); default: dcp for fsdp."
STOP_AFTER = "Stop and save after this step, as an interruption would; --resume continues."

# --- gguf -------------------------------------------------------------------------------------
# Spelled out so the CLI starts without importing torch (2 s); tests/test_cli.py checks it
# against mythos_convert.export.gguf_plan.OUTTYPES.
OUTTYPE_HELP = (
    "f32 | f16 | bf16 | q8_0 | q6_k | q5_k_m | q5_k_s | q5_1 | q5_0 | q4_k_m | q4_k_s | q4_1 | q4_0 | "
    "q3_k_l | q3_k_m | q3_k_s | q2_k | all"
)
IMATRIX = "Importance matrix (`mythos-convert imatrix`) to weight the quantizers."
OUTFILE = "Output path; `{ftype}` in it becomes the type (default: NAME-SIZE-TYPE.gguf)."
TARGET_BPW = "Bits per weight, a comma list (3.5,4.5): one file each, tensor types chosen by measured KL."
TARGET_SIZE = "File sizes, a comma list (95MB,120MB): one file each, tensor types chosen by measured KL."
SEARCH_DATA = "Text the type search calibrates and scores on (as `train --data`); default: the run's validation split."

# --- eval -------------------------------------------------------------------------------------
TARGETS = (
    "Checkpoints, HF folders, GGUF files, MLX folders; a folder means its model plus every GGUF and MLX folder in it."
)
EVAL_MLX_PYTHON = (
    "A Python with mlx-lm for the MLX folders (default: $MYTHOS_MLX_PYTHON, else this one; none: skipped)."
)
EVAL_DATA = "Text to score (as `train --data`); default: the run's validation split."
EVAL_CTX = "Tokens per window (default 512, or the model's context if smaller)."
EVAL_TOKENIZER = "tokenizer.json (default: the checkpoint's, else the folder's)."
# llama.cpp as eval runs it (both off: exactly as verify runs it)
FLASH_ATTN = (
    "llama.cpp with flash attention, as its own tools (llama-perplexity, llama-server) run it on CPU: faster; off, "
    "an F32 file computes float32 exactly (as verify runs it), the quantized types' figures barely move."
)
REPACK = (
    "Q4_0 files on llama.cpp's repacked weights (CPU_REPACK, never its AMX path), as llama.cpp runs them on a CPU "
    "without AMX: faster, the same KL divergence to 3 digits; off, llama.cpp's plain buffer (as verify runs it)."
)

# --- push -------------------------------------------------------------------------------------
GGUF_REPO = "Publish the GGUF files, Modelfile and a GGUF card to this repo (OWNER/NAME-GGUF)."
