"""Greedy generation speed on CPU: the native engine against transformers and llama.cpp, same weights.

Batch 1, a 64-token prompt, 256 new tokens, greedy, 2 threads, on the mythos-172m architecture
with random weights (vocab 3252). Engines: the native engine (float32, bfloat16) on its AVX2 decode
kernels and, as "native, torch ops", on torch's operations (its fallback), transformers'
`generate` on the folder `mythos-convert hf` exports (float32, bfloat16), llama.cpp through
llama-cpp-python on the f16 and q8_0 GGUF `mythos-convert gguf` writes (extra buffer types off),
and vLLM's CPU backend (`LLM.generate` on the same folder, float32 and its default bfloat16) in the
venv tests/test_compat_vllm.py builds under `.compat/` (`--vllm-python` for another).

A second table runs batch 8 (8 different 64-token prompts, the same new tokens each) for vLLM,
transformers and the native engine (float32): aggregate tok/s = 8 x new tokens / the whole call,
where batching should show (each weight read once per step serves 8 sequences).

Decoding reads every weight once per token, so the ceiling is bandwidth / weight bytes: the
table shows each engine's fraction of that roofline, with the read bandwidth measured in the same
run. tok/s counts all new tokens over the whole call (prompt processing included); "decode tok/s"
leaves out the time to the first new token.

    python benchmarks/bench_generate.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_generate.py --quick    # 64 new tokens, one repeat
    python benchmarks/bench_generate.py --engines vllm,native --batch 0   # a subset; no batch table
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # vllm_cpu: vLLM's environment

from _shared import THREADS_DEFAULT, bench_checkpoint, emit, machine, pin_threads, read_bandwidth_gbs
from vllm_cpu import vllm_env, vllm_venv_dir


@dataclass
class Run:
    first_s: float  # from the prompt to the first new token (prompt processing + one step)
    total_s: float  # the whole call
    ids: list[int]

    @property
    def tok_s(self) -> float:
        return len(self.ids) / self.total_s

    @property
    def decode_tok_s(self) -> float:
        return (len(self.ids) - 1) / max(self.total_s - self.first_s, 1e-9)


@dataclass
class Engine:
    name: str
    precision: str
    weight_bytes: int  # bytes read per decoded token (every weight matrix once)
    run: Callable[[list[int], int], Run]


def _timed(stream) -> Run:
    started = time.perf_counter()
    ids, first = [], 0.0
    for token in stream:
        if not ids:
            first = time.perf_counter() - started
        ids.append(int(token))
    return Run(first, time.perf_counter() - started, ids)


def _param_bytes(model) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


# ---- engines -----------------------------------------------------------------------------------


def native_engine(ckpt: Path, precision: str, compiled: bool = True) -> Engine:
    import torch

    from mythos_convert.formats.checkpoint import load_checkpoint, load_model
    from mythos_convert.model.generate import stream_ids

    model = load_model(load_checkpoint(ckpt), getattr(torch, precision))

    def run(prompt: list[int], n: int) -> Run:
        return _timed(stream_ids(model, prompt, max_new_tokens=n, eos_id=None, compiled=compiled))

    return Engine("native" if compiled else "native, torch ops", precision, _param_bytes(model), run)


class _Clock:
    """A transformers streamer that only notes when each new token arrives."""

    def __init__(self):
        self.started, self.times, self.calls = time.perf_counter(), [], 0

    def put(self, value):
        self.calls += 1
        if self.calls > 1:  # the first call carries the prompt
            self.times.append(time.perf_counter() - self.started)

    def end(self):
        pass


def transformers_engine(folder: Path, precision: str, eos: int | None) -> Engine:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, precision)).eval()

    def run(prompt: list[int], n: int) -> Run:
        cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=eos, pad_token_id=eos)
        clock = _Clock()
        with torch.inference_mode():
            out = model.generate(torch.tensor([prompt]), generation_config=cfg, streamer=clock)
        total = time.perf_counter() - clock.started
        return Run(clock.times[0], total, out[0, len(prompt) :].tolist())

    return Engine("transformers", precision, _param_bytes(model), run)


def gguf_bytes(path: Path) -> int:
    from gguf import GGUFReader

    return int(sum(int(t.n_bytes) for t in GGUFReader(path).tensors))


def llama_cpp_engine(path: Path, precision: str, threads: int) -> Engine:
    from llama_cpp import Llama

    from mythos_convert.engines.llama_buffers import no_extra_buffers

    with no_extra_buffers():  # the AMX repack crashes quantised models on AMX CPUs (research/gguf.md §5)
        llm = Llama(
            model_path=str(path), n_ctx=512, n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False
        )

    def run(prompt: list[int], n: int) -> Run:
        llm.reset()  # no reuse of a cached prompt: every run processes the whole prompt

        def tokens():
            for count, token in enumerate(llm.generate(prompt, top_k=1, temp=0.0, reset=False), start=1):
                yield token
                if count == n:
                    return

        return _timed(tokens())

    return Engine("llama.cpp", precision, gguf_bytes(path), run)


ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = vllm_venv_dir() / "bin" / "python"


def vllm_runs(folder: Path, precision: str, prompts: list[list[int]], n: int, repeats: int, python: Path, threads: int):
    """vLLM's timings from benchmarks/vllm_worker.py in its own venv (engine loaded once, not timed)."""
    job = {
        "prompts": prompts,
        "new_tokens": n,
        "repeats": repeats,
        "dtype": "auto" if precision != "float32" else precision,
    }
    with tempfile.TemporaryDirectory(prefix="mythos-vllm-") as tmp:
        answer = Path(tmp) / "answer.json"
        # vLLM binds its OpenMP threads to cores 0..threads-1: as many threads as every other engine gets
        env = vllm_env(python.parent.parent, cache=Path(tmp) / "cache", omp_threads_bind=f"0-{threads - 1}")
        worker = Path(__file__).parent / "vllm_worker.py"
        done = subprocess.run(
            [str(python), str(worker), str(folder), json.dumps(job), str(answer)],
            capture_output=True, text=True, env=env, timeout=1800,
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"vLLM failed (exit {done.returncode}): {done.stderr[-1500:]}")
        return json.loads(answer.read_text())


@dataclass
class BatchRun:
    total_s: float
    ids: list[list[int]]  # per sequence

    @property
    def tok_s(self) -> float:
        return sum(len(i) for i in self.ids) / self.total_s


def native_batch(ckpt: Path, prompts: list[list[int]], n: int) -> Callable[[], BatchRun]:
    """Greedy decoding of the whole batch at once on the native model's batched KV cache (float32)."""
    import torch

    from mythos_convert.formats.checkpoint import load_checkpoint, load_model

    model = load_model(load_checkpoint(ckpt), torch.float32).eval()

    def run() -> BatchRun:
        tokens = torch.tensor(prompts)
        started = time.perf_counter()
        with torch.inference_mode():
            model.setup_cache(len(prompts), tokens.shape[1] + n)
            try:
                logits = model(tokens, start=0, last_only=True)[:, -1]
                out = []
                for step in range(n):
                    token = logits.argmax(-1)
                    out.append(token)
                    if step < n - 1:
                        logits = model(token.view(-1, 1), start=tokens.shape[1] + step)[:, -1]
            finally:
                model.clear_cache()
        return BatchRun(time.perf_counter() - started, torch.stack(out, 1).tolist())

    return run


def transformers_batch(folder: Path, prompts: list[list[int]], n: int, eos: int | None) -> Callable[[], BatchRun]:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()

    def run() -> BatchRun:
        cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=eos, pad_token_id=eos)
        started = time.perf_counter()
        with torch.inference_mode():  # equal-length prompts: no padding, the mask is all ones
            ids = torch.tensor(prompts)
            out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=cfg)
        return BatchRun(time.perf_counter() - started, out[:, len(prompts[0]) :].tolist())

    return run


# ---- setup ---------------------------------------------------------------------------------------


def export_all(workdir: Path, ckpt: Path, want_gguf: bool) -> tuple[Path, dict[str, Path], list[str]]:
    """The HF folder (float32) and the f16/q8_0 GGUF files from the one checkpoint (cached in workdir)."""
    from mythos_convert.api import export_hf

    notes = []
    hf_dir = workdir / "hf"
    if not (hf_dir / "config.json").is_file():
        export_hf(ckpt, hf_dir, dtype="float32", verify=False, card=False, force=True)
    ggufs: dict[str, Path] = {}
    if want_gguf:
        try:
            import llama_cpp  # noqa: F401

            from mythos_convert.api import export_gguf
        except ImportError as exc:
            notes.append(f"llama.cpp rows unavailable: {exc}")
            return hf_dir, ggufs, notes
        for kind in ("f16", "q8_0"):
            target = workdir / f"bench-{kind}.gguf"
            if not target.is_file():
                export_gguf(ckpt, kind, outfile=target, verify=False, force=True)
            ggufs[kind] = target
    return hf_dir, ggufs, notes


def prompt_of(tokenizer, length: int) -> list[int]:
    from mythos_convert.data.corpus import embedded_corpus
    from mythos_convert.model.generate import prompt_ids

    text = " ".join(embedded_corpus(max_files=20))
    return prompt_ids(tokenizer, text)[:length]


def prompts_of(tokenizer, length: int, count: int) -> list[list[int]]:
    """`count` different prompts of `length` ids (`<bos>` + consecutive corpus slices); the first is `prompt_of`'s."""
    from mythos_convert.data.corpus import embedded_corpus
    from mythos_convert.model.generate import prompt_ids

    ids = prompt_ids(tokenizer, " ".join(embedded_corpus(max_files=20)))
    return [ids[:length]] + [[ids[0], *ids[1 + k * (length - 1) : 1 + (k + 1) * (length - 1)]] for k in range(1, count)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 new tokens, one repeat")
    parser.add_argument("--threads", type=int, default=THREADS_DEFAULT)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=None, help="best of N runs per engine (default 3)")
    parser.add_argument("--budget-s", type=float, default=90.0, help="stop repeating an engine after this long")
    parser.add_argument("--engines", default="native,native-torch,transformers,llama.cpp,vllm")
    parser.add_argument("--batch", type=int, default=8, help="the batch table's batch size (0: no batch table)")
    parser.add_argument("--vllm-python", type=Path, default=VLLM_PYTHON, help="python of a venv with vllm-cpu")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the checkpoint and exports here")
    args = parser.parse_args(argv)
    new_tokens = args.new_tokens or (64 if args.quick else 256)
    repeats = args.repeats or (1 if args.quick else 3)
    pin_threads(args.threads)

    import torch

    from mythos_convert.data.tokenizer import load_tokenizer, special_tokens
    from mythos_convert.model import kernels
    from mythos_convert.support.ui import set_quiet

    set_quiet(True)
    wanted = set(args.engines.split(","))
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mythos-bench-")))
        ckpt = bench_checkpoint(workdir / "native")
        tok = load_tokenizer(ckpt.parent / "tokenizer.json")
        eos = special_tokens(tok).id("eos")
        hf_dir, ggufs, notes = export_all(workdir, ckpt, "llama.cpp" in wanted)
        prompt = prompt_of(tok, args.prompt_tokens)
        prompts = prompts_of(tok, args.prompt_tokens, max(args.batch, 1))
        assert prompts[0] == prompt and all(len(p) == len(prompt) for p in prompts)

        engines: list[Engine] = []
        for precision in ("float32", "bfloat16"):
            if "native" in wanted:
                engines.append(native_engine(ckpt, precision))
            if "native-torch" in wanted and kernels.status().library is not None:
                engines.append(native_engine(ckpt, precision, compiled=False))
            if "transformers" in wanted:
                engines.append(transformers_engine(hf_dir, precision, eos))
        if "llama.cpp" in wanted:
            for kind, path in ggufs.items():
                engines.append(llama_cpp_engine(path, kind, args.threads))

        bandwidth = read_bandwidth_gbs(args.threads)
        best: dict[int, Run] = {}
        spent = dict.fromkeys(range(len(engines)), 0.0)
        for _ in range(repeats):  # interleaved, so a burst of load elsewhere hits every engine alike
            for i, engine in enumerate(engines):
                if spent[i] > args.budget_s and i in best:
                    continue
                torch.manual_seed(0)
                run = engine.run(prompt, new_tokens)
                spent[i] += run.total_s
                if i not in best or run.total_s < best[i].total_s:
                    best[i] = run
        bandwidth = max(bandwidth, read_bandwidth_gbs(args.threads))

        batch_rows: list[list[object]] = []
        vllm_batches: dict[str, BatchRun] = {}
        if "vllm" in wanted:
            n_params = load_checkpoint_config(ckpt).num_parameters()
            for precision in ("float32",) if args.quick else ("float32", "bfloat16"):
                if not args.vllm_python.is_file():
                    notes.append(f"vLLM rows unavailable: no {args.vllm_python} (tests/test_compat_vllm.py builds it)")
                    break
                got = vllm_runs(hf_dir, precision, prompts, new_tokens, repeats, args.vllm_python, args.threads)
                fastest = min(got["batch1"], key=lambda r: r["total_s"])
                label = "bfloat16 (vLLM's default)" if precision == "bfloat16" else precision
                engines.append(Engine("vLLM (CPU)", label, n_params * (4 if precision == "float32" else 2), None))
                best[len(engines) - 1] = Run(min(got["first"]), fastest["total_s"], fastest["ids"])
                batched = min(got["batchN"], key=lambda r: r["total_s"])
                vllm_batches[label] = BatchRun(batched["total_s"], batched["ids"])
                notes.append(f"vLLM {got['vllm']} ({label}): engine start {got['load_s']:.0f} s, not timed")
        if args.batch > 1:
            batch_rows = _batch_rows(
                ckpt, hf_dir, prompts, new_tokens, repeats, eos, wanted, vllm_batches, engines, best
            )
        env = machine(args.threads)

    rows = _rows(engines, best, bandwidth)
    notes = [
        f"machine: {env}",
        f"model: mythos-172m architecture, random weights; prompt {len(prompt)} tokens, {new_tokens} new, greedy, "
        f"batch 1; best of {repeats}",
        f"read bandwidth (torch sum over 1 GiB, {args.threads} threads): {bandwidth:.1f} GB/s; "
        "roofline tok/s = bandwidth / weight bytes per token",
        f"native decode step: {kernels.describe(torch.float32)}; 'native, torch ops' is the same engine on "
        "torch's operations (the fallback where the kernels cannot run)",
        *notes,
    ]
    summary = [[r[0], r[1], "tok/s", r[2], r[5], f"{r[8]} of roofline"] for r in rows]
    emit("Generation speed (tokens/s, higher is better)", HEADERS, rows, notes, summary)
    if batch_rows:
        batch_notes = [
            f"batch {args.batch}: {args.batch} different {len(prompt)}-token prompts, {new_tokens} new tokens each, "
            f"greedy; aggregate tok/s = {args.batch} x {new_tokens} / the whole call; best of {repeats}",
            "same tokens: sequence 0 (the batch-1 prompt) against the native engine's batch-1 float32 tokens",
        ]
        summary = [[r[0], r[1], f"tok/s at batch {args.batch}", r[3], r[5], ""] for r in batch_rows]
        emit(
            f"Generation speed at batch {args.batch} (aggregate tokens/s)",
            BATCH_HEADERS,
            batch_rows,
            batch_notes,
            summary,
        )


BATCH_HEADERS = ["engine", "weights", "batch", "aggregate tok/s", "per-sequence tok/s", "x its batch 1", "same tokens"]


def load_checkpoint_config(ckpt: Path):
    from mythos_convert.formats.checkpoint import load_checkpoint

    return load_checkpoint(ckpt).config


def _batch_rows(ckpt, hf_dir, prompts, n, repeats, eos, wanted, vllm_batches, engines, best) -> list[list[object]]:
    """Batch rows: the native engine and transformers timed here (best of `repeats`), vLLM's from its worker."""
    runners = {}
    if "native" in wanted:
        runners[("native", "float32")] = native_batch(ckpt, prompts, n)
    if "transformers" in wanted:
        runners[("transformers", "float32")] = transformers_batch(hf_dir, prompts, n, eos)
    results: dict[tuple[str, str], BatchRun] = {}
    for _ in range(repeats):
        for key, run in runners.items():
            got = run()
            if key not in results or got.total_s < results[key].total_s:
                results[key] = got
    results.update({("vLLM (CPU)", label): r for label, r in vllm_batches.items()})
    batch1 = {(e.name, e.precision): best[i] for i, e in enumerate(engines) if i in best}
    native = batch1.get(("native", "float32"))
    rows = []
    for (name, precision), got in results.items():
        single = batch1.get((name, precision))
        same = _common_prefix(got.ids[0], native.ids) if native else None
        rows.append(
            [
                name,
                precision,
                len(got.ids),
                got.tok_s,
                got.tok_s / len(got.ids),
                f"{got.tok_s / single.tok_s:.2f}x" if single else "-",
                f"{same}/{len(got.ids[0])}" if same is not None else "-",
            ]
        )
    return rows


HEADERS = [
    "engine",
    "weights",
    "tok/s",
    "decode tok/s",
    "first token s",
    "x transformers fp32",
    "MB read/token",
    "roofline tok/s",
    "% of roofline",
    "same tokens as native fp32",
]


def _rows(engines: list[Engine], best: dict[int, Run], bandwidth: float) -> list[list[object]]:
    def find(name: str, precision: str) -> Run | None:
        for i, e in enumerate(engines):
            if e.name == name and e.precision == precision:
                return best[i]
        return None

    base = find("transformers", "float32")
    native = find("native", "float32")
    rows = []
    for i, engine in enumerate(engines):
        run = best[i]
        roofline = bandwidth * 1e9 / engine.weight_bytes
        same = _common_prefix(run.ids, native.ids) if native else None
        rows.append(
            [
                engine.name,
                engine.precision,
                run.tok_s,
                run.decode_tok_s,
                run.first_s,
                f"{run.tok_s / base.tok_s:.2f}x" if base else "-",
                engine.weight_bytes / 1e6,
                roofline,
                f"{100 * run.decode_tok_s / roofline:.0f}%",
                f"{same}/{len(run.ids)}" if same is not None else "-",
            ]
        )
    return rows


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


if __name__ == "__main__":
    main()
