"""Where an HF export diverges from the native model: the first block and sub-layer whose output differs.

Run only when a logit check failed: both models are loaded at once for it.
"""

from __future__ import annotations

import torch

from mythos_convert.verify.gates import LOCALISE_REL


def _stages(native, hf) -> list[tuple[str, torch.nn.Module, torch.nn.Module]]:
    """(name, native module, transformers module) in the order the forward pass runs them."""
    stages = [("the embedding", native.embedding, hf.model.embed_tokens)]
    for i, (ours, theirs) in enumerate(zip(native.layers, hf.model.layers, strict=True)):
        stages += [
            (f"block {i} attention norm (input_layernorm)", ours.attn_norm, theirs.input_layernorm),
            (f"block {i} attention (self_attn)", ours.attention, theirs.self_attn),
            (f"block {i} MLP norm (post_attention_layernorm)", ours.ffn_norm, theirs.post_attention_layernorm),
            (f"block {i} MLP (mlp)", ours.feed_forward, theirs.mlp),
            (f"block {i} output", ours, theirs),
        ]
    return [*stages, ("the final norm", native.norm, hf.model.norm)]


def _outputs(model, modules: list[torch.nn.Module], run) -> list[torch.Tensor]:
    """Each module's output (first element of a tuple) during one forward pass, by forward hooks."""
    got: dict[int, torch.Tensor] = {}

    def keeper(i: int):
        def hook(_module, _args, out) -> None:  # returns None: a hook's return value replaces the output
            got.setdefault(i, (out[0] if isinstance(out, tuple) else out).detach().float())

        return hook

    hooks = [m.register_forward_hook(keeper(i)) for i, m in enumerate(modules)]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in hooks:
            h.remove()
    return [got[i] for i in range(len(modules))]


def localise(native, hf, ids: list[int]) -> str:
    """Name the first block and sub-layer (attention, MLP, norm) whose output differs between the models.

    Both run `ids` once with forward hooks on every block's sub-layers (the block outputs are what
    transformers returns as `output_hidden_states`); the first stage whose output differs by more
    than rounding, while its input still agrees, is where the export goes wrong.
    """
    stages = _stages(native, hf)
    batch = torch.tensor([ids])
    ours = _outputs(native, [s[1] for s in stages], lambda: native(batch))
    theirs = _outputs(hf, [s[2] for s in stages], lambda: hf(batch))
    for (name, _, _), a, b in zip(stages, ours, theirs, strict=True):
        if a.shape != b.shape:
            return f"first divergence: {name} (output shapes {tuple(a.shape)} vs {tuple(b.shape)})"
        if not torch.isfinite(b).all() or not torch.isfinite(a).all():
            side = "transformers" if not torch.isfinite(b).all() else "native"
            return f"first divergence: {name} ({side} output is not finite)"
        diff = float((a - b).abs().max())
        rel = diff / max(float(a.abs().max()), 1e-12)
        if rel > LOCALISE_REL:
            return f"first divergence: {name} (max |diff| {diff:.3g}, {rel:.2g} of its scale; everything before agrees)"
    return "no sub-layer diverges on the longest prompt: the difference is in the output head or the decoding"
