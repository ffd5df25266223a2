"""The README.md of an MLX folder: what it is, how to run it, and its verify figures, read from the result.

mlx-lm writes a stub card (tags only); this one replaces it so a folder pushed on its own says
which model it quantizes, how, and how close it stays to the float32 model.
"""

from __future__ import annotations

from mythos_convert.mlx.written import GROUP_SIZE, MLXWritten
from mythos_convert.support.ui import human_size


def mlx_card(out: MLXWritten, source_name: str) -> str:
    """The card text for one MLX folder."""

    versions = out.verify.get("versions", {})
    lines = [
        "---",
        "library_name: mlx",
        "pipeline_tag: text-generation",
        "tags:",
        "- mlx",
        "- mythos",
        "---",
        "",
        f"# {source_name} (MLX, {out.bits}-bit)",
        "",
        f"`{source_name}` quantized to {out.bits} bits (affine, groups of {GROUP_SIZE}) by "
        f"mlx-lm {versions.get('mlx-lm', '?')}'s own `mlx_lm.convert`, for MLX on Apple silicon (or `mlx[cpu]`).",
        "It is a base model: it continues text.",
        "",
        "```python",
        "from mlx_lm import generate, load",
        "",
        'model, tokenizer = load("PATH/TO/THIS/FOLDER")',
        'print(generate(model, tokenizer, prompt="Once upon a time", max_tokens=64))',
        "```",
        "",
        "| file size | bits per weight |",
        "|---|---|",
        f"| {human_size(out.size)} | {out.bits_per_weight:.2f} |",
        "",
    ]
    v = out.verify
    if "mean_kl" in v:
        lines += [
            f"Verified in mlx-lm (mlx {versions.get('mlx', '?')}, CPU) against the native model in float32 on "
            f"{v['positions']} positions: KL divergence mean {v['mean_kl']:.3g} (gate {v['gate']['mean_kl']:g}), "
            f"p99 {v['p99_kl']:.3g} (gate {v['gate']['p99_kl']:g}), top-1 agreement {v['top1_agreement']:.1%}.",
            "",
        ]
    else:
        lines += ["Not verified (written with `--no-verify`).", ""]
    return "\n".join(lines)
