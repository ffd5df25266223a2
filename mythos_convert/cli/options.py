"""Every command's options and arguments, defined once with their help text.

A command module is then its signature (these aliases), one library call and the printing of what
the library rendered. Shared options first, then each command's own, in the order of `--help`.
Nothing here imports torch: the CLI starts without it (tests/test_cli.py checks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from typer import Argument, Option


def apply_quiet(quiet: bool) -> bool:
    """--quiet's callback: commands take it too, so it works after the command name as well as before it.

    Returns the value, which click keeps as the option's value.
    """
    if quiet:
        from mythos_convert.support.ui import set_quiet

        set_quiet(True)
    return quiet


# --- shared -----------------------------------------------------------------------------------
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
MlxPythonOpt = Annotated[Path | None, Option(help="A Python with mlx-lm (default: $MYTHOS_MLX_PYTHON, else this one).")]
# The Hub options of `push` and `space`: each command words --repo, --private and --dry-run for what it publishes.
TokenOpt = Annotated[str | None, Option(help="Write token (default: HF_TOKEN or `hf auth login`).")]
EndpointOpt = Annotated[str | None, Option(help="Hub URL (default: HF_ENDPOINT or huggingface.co).")]

# --- train, tokenizer, generate ---------------------------------------------------------------
PRESET = "tiny, mythos-172m, mythos-500m, mythos-1b or a preset YAML file (default: tiny)."
STRATEGY = "single (one process), ddp (replicas under torchrun) or fsdp (FSDP2 shards under torchrun)."
FORMAT = "pt (one ckpt.pt) or dcp (a torch.distributed.checkpoint folder, ckpt-dcp/); default: dcp for fsdp."
PresetOpt = Annotated[str | None, Option(help=PRESET)]
TrainTokenizerOpt = Annotated[Path | None, Option(help="Use this tokenizer.json instead of training one on the data.")]
MaxStepsOpt = Annotated[int | None, Option(help="Total optimizer steps (overrides the preset).")]
RunOutOpt = Annotated[Path | None, Option(help="Run folder (default: runs/<preset>).")]
ResumeOpt = Annotated[bool, Option("--resume", help="Continue the run in --out exactly where it stopped.")]
TrainNormalizerOpt = Annotated[str, Option(help="Normalizer of a trained tokenizer: none or nfkc.")]
StrategyOpt = Annotated[str, Option(help=STRATEGY)]
CheckpointFormatOpt = Annotated[str | None, Option(help=FORMAT)]
ActivationCheckpointingOpt = Annotated[
    bool, Option("--activation-checkpointing", help="Recompute activations in backward to save memory.")
]
StopAfterOpt = Annotated[
    int | None, Option(help="Stop and save after this step, as an interruption would; --resume continues.")
]
VocabSizeOpt = Annotated[int, Option(help="Vocabulary size incl. 5 specials and 256 bytes.")]
NormalizerOpt = Annotated[str, Option(help="none (NFKC is done in the data pipeline) or nfkc.")]
TokenizerOutOpt = Annotated[Path, Option(help="Output tokenizer.json.")]
ModelArg = Annotated[Path, Argument(help="A native checkpoint (ckpt.pt), HF folder or GGUF file (run dequantised).")]
PromptArg = Annotated[str, Argument(help="Text to continue (gets <bos>, never <eos>).")]
MaxNewTokensOpt = Annotated[int, Option(help="Most tokens to add (bounded by the context).")]
TemperatureOpt = Annotated[float, Option(help="0 is greedy decoding.")]
TopPOpt = Annotated[float, Option(help="Nucleus sampling mass (1 keeps every token).")]
TopKOpt = Annotated[int, Option(help="Sample among the k most likely tokens (0: all).")]
SeedOpt = Annotated[int | None, Option(help="Seed for reproducible sampling.")]
GenerateDtypeOpt = Annotated[str, Option(help="float32 or bfloat16.")]

# --- hf, native, verify -----------------------------------------------------------------------
HFOutArg = Annotated[Path, Argument(help="Output folder (refused if not empty, unless --force).")]
DtypeOpt = Annotated[str | None, Option(help="float32 | bfloat16 | float16 (default: the checkpoint's).")]
MaxShardSizeOpt = Annotated[str, Option(help="Shard the weights above this size (5GB, 500MB or bytes).")]
NoVerifyOpt = Annotated[bool, Option("--no-verify", help="Skip the parity check against the native model.")]
AllowNonfiniteOpt = Annotated[bool, Option("--allow-nonfinite", help="Export NaN/Inf weights instead of refusing.")]
HFTemperatureOpt = Annotated[float, Option(help="Sampling temperature in generation_config.json.")]
HFTopPOpt = Annotated[float, Option(help="Nucleus sampling top_p in generation_config.json.")]
HFFolderArg = Annotated[Path, Argument(help="HF Llama folder (e.g. written by `mythos-convert hf`).")]
NativeOutArg = Annotated[Path, Argument(help="Native checkpoint to write (ckpt.pt).")]
VerifyTargetArg = Annotated[Path, Argument(help="Exported folder (from `hf`) or .gguf file.")]
VerifyCheckpointOpt = Annotated[
    Path | None, Option(help="Native checkpoint (default: the one recorded at export time).")
]
LAYERWISE = (
    "Block by block (memory: about two blocks) or the whole models (logits and greedy). "
    "Default: layerwise only where 2x the weights exceed the available memory."
)
LayerwiseOpt = Annotated[bool | None, Option("--layerwise/--whole", help=LAYERWISE)]

# --- gguf, imatrix, mlx -----------------------------------------------------------------------
# Spelled out so the CLI starts without importing torch (2 s); tests/test_cli.py checks it
# against mythos_convert.export.gguf_plan.OUTTYPES.
OUTTYPE_HELP = (
    "f32 | f16 | bf16 | q8_0 | q6_k | q5_k_m | q5_k_s | q5_1 | q5_0 | q4_k_m | q4_k_s | q4_1 | q4_0 | "
    "q3_k_l | q3_k_m | q3_k_s | q2_k | all"
)
GGUFSourceArg = Annotated[
    Path, Argument(help="HF folder written by `mythos-convert hf` (files go into it) or a ckpt.pt.")
]
OuttypeOpt = Annotated[str | None, Option(help=f"{OUTTYPE_HELP} (or a comma list; default f16).")]
OutfileOpt = Annotated[
    Path | None, Option(help="Output path; `{ftype}` in it becomes the type (default: NAME-SIZE-TYPE.gguf).")
]
ModelfileOpt = Annotated[bool, Option("--modelfile", help="Also write an Ollama Modelfile beside the GGUF.")]
SplitMaxSizeOpt = Annotated[str | None, Option(help="Split into shards of at most this size (500M, 2G).")]
NoGGUFVerifyOpt = Annotated[bool, Option("--no-verify", help="Skip the llama.cpp parity check.")]
ImatrixOpt = Annotated[
    Path | None, Option(help="Importance matrix (`mythos-convert imatrix`) to weight the quantizers.")
]
TARGET_BPW = "Bits per weight, a comma list (3.5,4.5): one file each, tensor types chosen by measured KL."
TARGET_SIZE = "File sizes, a comma list (95MB,120MB): one file each, tensor types chosen by measured KL."
SEARCH_DATA = "Text the type search calibrates and scores on (as `train --data`); default: the run's validation split."
TargetBpwOpt = Annotated[str | None, Option(help=TARGET_BPW)]
TargetSizeOpt = Annotated[str | None, Option(help=TARGET_SIZE)]
SearchDataOpt = Annotated[list[Path] | None, Option(help=SEARCH_DATA)]
ImatrixOutOpt = Annotated[Path, Option(help="Output imatrix file (llama.cpp's GGUF imatrix format).")]
CalibrationOpt = Annotated[
    list[Path] | None,
    Option(help="Calibration text (as `train --data`); default: the run's validation split."),
]
ImatrixCtxOpt = Annotated[int, Option(help="Tokens per window (capped at the model's context).")]
MLXFolderArg = Annotated[Path, Argument(help="HF folder written by `mythos-convert hf` (MLX folders go into it).")]
BitsOpt = Annotated[str, Option(help="4 | 8, or a comma list (4,8).")]
NoMLXVerifyOpt = Annotated[bool, Option("--no-verify", help="Skip the mlx-lm parity check.")]

# --- eval -------------------------------------------------------------------------------------
TARGETS = (
    "Checkpoints, HF folders, GGUF files, MLX folders; a folder means its model plus every GGUF and MLX folder in it."
)
EVAL_MLX_PYTHON = (
    "A Python with mlx-lm for the MLX folders (default: $MYTHOS_MLX_PYTHON, else this one; none: skipped)."
)
# llama.cpp as eval runs it (both off: exactly as verify runs it)
FLASH_ATTN = (
    "llama.cpp with flash attention, as its own tools (llama-perplexity, llama-server) run it on CPU: faster; off, "
    "an F32 file computes float32 exactly (as verify runs it), the quantized types' figures barely move."
)
REPACK = (
    "Q4_0 files on llama.cpp's repacked weights (CPU_REPACK, never its AMX path), as llama.cpp runs them on a CPU "
    "without AMX: faster, the same KL divergence to 3 digits; off, llama.cpp's plain buffer (as verify runs it)."
)
EvalTargetsArg = Annotated[list[Path], Argument(help=TARGETS)]
EvalDataOpt = Annotated[
    list[Path] | None, Option(help="Text to score (as `train --data`); default: the run's validation split.")
]
EvalCtxOpt = Annotated[int | None, Option(help="Tokens per window (default 512, or the model's context if smaller).")]
JsonOpt = Annotated[Path | None, Option("--json", help="Also write the whole report as JSON here.")]
EvalTokenizerOpt = Annotated[Path | None, Option(help="tokenizer.json (default: the checkpoint's, else the folder's).")]
NoRecordOpt = Annotated[bool, Option("--no-record", help="Do not write eval.json (nor re-render the card).")]
FlashAttnOpt = Annotated[bool, Option("--flash-attn/--no-flash-attn", help=FLASH_ATTN)]
RepackOpt = Annotated[bool, Option("--repack/--no-repack", help=REPACK)]
EvalMlxPythonOpt = Annotated[Path | None, Option(help=EVAL_MLX_PYTHON)]

# --- card, push, space, demo ------------------------------------------------------------------
CardFolderArg = Annotated[Path, Argument(help="The exported folder (written by `mythos-convert hf`).")]
MetaOpt = Annotated[
    Path | None,
    Option(help="Card metadata YAML (license, developer, prompts, ...); default: the packaged one."),
]
PushFolderArg = Annotated[Path, Argument(help="The exported folder to publish.")]
PushRepoOpt = Annotated[str, Option("--repo", help="Hub repo id OWNER/NAME (created if missing).")]
GGUFRepoOpt = Annotated[
    str | None, Option(help="Publish the GGUF files, Modelfile and a GGUF card to this repo (OWNER/NAME-GGUF).")
]
PrivateOpt = Annotated[bool, Option("--private", help="Create the repo private.")]
RevisionOpt = Annotated[str | None, Option(help="Branch to commit to (created if missing).")]
CreatePROpt = Annotated[bool, Option("--create-pr", help="Open a pull request instead of committing.")]
CommitMessageOpt = Annotated[str | None, Option(help="Commit message.")]
IncludeOpt = Annotated[list[str] | None, Option(help="Only upload files matching this glob (repeatable).")]
ExcludeOpt = Annotated[list[str] | None, Option(help="Skip files matching this glob, e.g. '*.gguf' (repeatable).")]
PushDryRunOpt = Annotated[bool, Option("--dry-run", help="Show what would be uploaded; upload nothing.")]
SkipChecksOpt = Annotated[bool, Option("--skip-checks", help="Publish even if the folder fails its checks.")]
SpaceFolderArg = Annotated[Path, Argument(help="Folder to write the Space into (app.py, requirements.txt, README.md).")]
SpaceRepoOpt = Annotated[str, Option("--repo", help="The Space's repo id OWNER/NAME-demo (created if missing).")]
SpaceModelOpt = Annotated[
    str | None, Option(help="The published model it demonstrates (default: --repo without -demo).")
]
SpacePrivateOpt = Annotated[bool, Option("--private", help="Create the Space private.")]
SpaceDryRunOpt = Annotated[bool, Option("--dry-run", help="Write the files and show the upload; upload nothing.")]
DemoOutArg = Annotated[Path, Argument(help="Folder for everything the demo makes.")]
DemoMaxStepsOpt = Annotated[int | None, Option(help="Training steps (default: the tiny preset's).")]
