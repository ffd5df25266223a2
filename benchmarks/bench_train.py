"""Training speed on CPU: the native model's step against the same step on transformers' Llama.

One step = forward, cross-entropy, backward, gradient clipping at 1.0 and an AdamW step (the
trainer's optimizer: betas 0.9/0.95, weight decay on matrices only), on the mythos-172m
architecture. The transformers model is a `LlamaForCausalLM` with the identical configuration
(the config `mythos-convert hf` writes) holding the same weights; the benchmark checks that both
give the same logits before timing. Sizes are small so it runs in about a minute on 2 cores.

    python benchmarks/bench_train.py           # batch 4 x 128 tokens, 3 timed steps
    python benchmarks/bench_train.py --quick   # batch 2 x 64, 2 timed steps
    python benchmarks/bench_train.py --bf16    # also under bf16 autocast (slow on AVX2 CPUs)
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _shared import ARCH, THREADS_DEFAULT, emit, machine, pin_threads


def _native(cfg):
    import torch

    from mythos_convert.model.model import Mythos

    torch.manual_seed(0)
    model = Mythos(cfg).train()

    def loss_of(x, y):
        return model(x, y)[1]

    return model, loss_of


def _transformers(cfg, native_state):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mythos_convert.data.tokenizer import SpecialTokens
    from mythos_convert.formats.hf_config import hf_config_dict
    from mythos_convert.names import convert_name

    specials = SpecialTokens(bos=("<bos>", 1), eos=("<eos>", 2), pad=("<pad>", 3))
    model = LlamaForCausalLM(LlamaConfig(**hf_config_dict(cfg, specials, "float32")))
    state = {}
    for name, tensor in native_state.items():
        if name in ("rope_cos", "rope_sin", "output.weight"):  # buffers; the head is tied
            continue
        state[convert_name(name, "native", "hf")] = tensor
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"weights do not map: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.train()
    vocab = cfg.vocab_size

    def loss_of(x, y):
        logits = model(input_ids=x).logits
        return torch.nn.functional.cross_entropy(logits.float().view(-1, vocab), y.reshape(-1))

    return model, loss_of


def _step_timer(model, loss_of: Callable, batch, autocast: bool) -> Callable[[], float]:
    import torch

    from mythos_convert.model.config import TrainingConfig
    from mythos_convert.train.schedule import make_optimizer

    optimizer = make_optimizer(model, TrainingConfig())
    x, y = batch

    def step() -> float:
        started = time.perf_counter()
        cast = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with cast:
            loss = loss_of(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    return step


def _same_logits(native, hf, x) -> float:
    import torch

    with torch.no_grad():
        a = native(x)
        b = hf(input_ids=x).logits
    return float((a - b).abs().max())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 2 x 64, 2 timed steps")
    parser.add_argument("--threads", type=int, default=THREADS_DEFAULT)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (after one warm-up step)")
    parser.add_argument(
        "--bf16", action="store_true", help="add bf16 autocast rows (very slow on CPUs without native bf16, e.g. AVX2)"
    )
    args = parser.parse_args(argv)
    batch = args.batch or (2 if args.quick else 4)
    seq = args.seq or (64 if args.quick else 128)
    steps = args.steps or (2 if args.quick else 3)
    modes = [False, True] if args.bf16 else [False]
    pin_threads(args.threads)

    import torch

    from mythos_convert.model.config import load_preset

    cfg = load_preset(ARCH).model
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=gen)
    data = (tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())

    native, native_loss = _native(cfg)
    hf, hf_loss = _transformers(cfg, native.state_dict())
    diff = _same_logits(native, hf, data[0][:1])

    results: dict[tuple[str, bool], float] = {}
    for autocast in modes:
        timers = {
            "native": _step_timer(native, native_loss, data, autocast),
            "transformers": _step_timer(hf, hf_loss, data, autocast),
        }
        for timer in timers.values():
            timer()  # warm-up: allocations, optimizer state
        best = dict.fromkeys(timers, float("inf"))
        for _ in range(steps):  # interleaved, so load elsewhere hits both alike
            for name, timer in timers.items():
                best[name] = min(best[name], timer())
        for name, seconds in best.items():
            results[(name, autocast)] = seconds

    rows = []
    for (name, autocast), seconds in results.items():
        base = results[("transformers", autocast)]
        rows.append(
            [
                name,
                "bf16 autocast" if autocast else "float32",
                batch * seq / seconds,
                seconds,
                f"{base / seconds:.2f}x",
            ]
        )
    notes = [
        f"machine: {machine(args.threads)}",
        f"model: {ARCH} architecture ({native.num_parameters() / 1e6:.1f} M parameters), batch {batch} x {seq} "
        f"tokens, forward + backward + clip + AdamW; best of {steps} steps after a warm-up step",
        f"same weights in both; max |logit difference| before training {diff:.2e}",
    ]
    summary = [[r[0], r[1], "train tokens/s", r[2], r[4], ""] for r in rows]
    emit("Training speed (tokens/s, higher is better)", HEADERS, rows, notes, summary)


HEADERS = ["engine", "precision", "tokens/s", "s/step", "x transformers (same precision)"]


if __name__ == "__main__":
    main()
