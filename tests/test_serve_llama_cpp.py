"""llama.cpp's OpenAI-compatible server (llama-cpp-python's `server` extra) serving our GGUF files.

The model is the reference implementation's own checkpoint (../shared/fixtures/reference), exported
by `export_gguf`; the expected text is the reference's own greedy generation, decoded. The server
runs as a user starts it, `python -m llama_cpp.server --model FILE`, on 127.0.0.1, and is asked the
way an application asks: POST /v1/completions with a text prompt at temperature 0.

On CPUs with AMX the stock server crashes on Q8_0 (llama.cpp's AMX repack path, issue 20824): that
is asserted here, and `python -m mythos_convert.llama_server` (the same server with AMX taken out
of llama.cpp's extra buffer types) is what serves Q8_0 there, and Q4_0 on llama.cpp's repacked
weights.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import REFERENCE
from servers import cpu_flags, free_port, post_json, serve
from tokenizers import Tokenizer

from mythos_convert.api import export_gguf
from mythos_convert.engines.llama_buffers import can_repack, repacked_weights
from mythos_convert.formats.checkpoint import load_checkpoint, load_model

pytestmark = [pytest.mark.slow, pytest.mark.llama_cpp]

AMX = "amx_int8" in cpu_flags()
EOS = 2
STOCK = "llama_cpp.server"
WRAPPED = "mythos_convert.llama_server"


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory, reference) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("serve-gguf")
    export = export_gguf(
        REFERENCE / "ref_small.pt",
        "f16,q8_0,q4_0",
        out / "ref-{ftype}.gguf",
        tokenizer=REFERENCE / "tokenizer" / "tokenizer.json",
        verify=False,
    )
    return {w.outtype.name.upper(): w.path for w in export.written}


@dataclass
class Step:
    """One greedy step of the native model: the token it picks and the logits it picked from."""

    token: int
    logits: torch.Tensor


@pytest.fixture(scope="module")
def native_steps(reference) -> list[list[Step]]:
    """The native engine (float32) decoding each prompt greedily, 20 tokens, full logits kept."""
    model = load_model(load_checkpoint(REFERENCE / "ref_small.pt")).eval()
    runs = []
    with torch.no_grad():
        for ids, greedy in zip(reference["ids"], reference["greedy"], strict=True):
            seq, steps = list(ids), []
            for _ in range(20):
                logits = model(torch.tensor([seq]))[0, -1]
                steps.append(Step(int(logits.argmax()), logits))
                seq.append(steps[-1].token)
            assert seq == greedy  # the native engine is the reference implementation's greedy
            runs.append(steps)
    return runs


def compare(text: str, steps: list[Step], tok: Tokenizer, bound: float) -> tuple[int, str | None]:
    """Walk the native greedy tokens along the server's text: (tokens agreed, why it stopped or None).

    The server may leave the native path only at a near-tie: where the token its text continues
    with is within `bound` (the engine's logit error) of native's top-1 logit. Returns at `<eos>`."""
    agreed: list[int] = []
    for step in steps:
        if step.token == EOS:
            return (len(agreed), None) if text == tok.decode(agreed) else (len(agreed), "text runs past <eos>")
        ours = tok.decode([*agreed, step.token])
        if ours.endswith("\ufffd") or text.startswith(ours):  # a split UTF-8 character: judged at the next
            agreed.append(step.token)
            continue
        close = (step.logits.max() - step.logits <= bound).nonzero().flatten().tolist()
        if any(text.startswith(tok.decode([*agreed, t])) for t in close if t != step.token):
            return len(agreed), None  # a near-tie resolved the other way: the paths part here, legitimately
        return len(agreed), f"left the native path at token {len(agreed)} (no token within {bound} of native's)"
    return len(agreed), None if text == tok.decode(agreed) else "text runs past the 20 tokens"


def llama_server(module: str, model: Path, log: Path, verbose: bool = False):
    port = free_port()
    argv = [sys.executable, "-m", module, "--model", str(model), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--n_ctx", "128", "--n_threads", "1", "--seed", "0", "--verbose", str(verbose)]
    return serve(argv, port=port, ready_path="/v1/models", log=log, startup_s=120)


# The bound on |llama.cpp logit - native logit| within which a greedy step may go either way:
# measured on these prompts' greedy paths, F16 0.0040 and Q8_0 0.18 (llama.cpp with an F32 KV
# cache). F16 agreed with native on every token, so it is held to that: no near-tie allowed.
BOUNDS = {"F16": 0.0, "Q8_0": 0.25}
CASES = [("F16", STOCK), ("Q8_0", WRAPPED)] + ([] if AMX else [("Q8_0", STOCK)])


@pytest.mark.parametrize(("ftype", "module"), CASES)
def test_completions_give_native_greedy_text(ggufs, reference, native_steps, tmp_path, ftype, module):
    tok = Tokenizer.from_file(str(REFERENCE / "tokenizer" / "tokenizer.json"))
    agreed = 0
    with llama_server(module, ggufs[ftype], tmp_path / "server.log") as server:
        for prompt, ids, steps in zip(reference["prompts"], reference["ids"], native_steps, strict=True):
            # llama-cpp-python's server applies repeat_penalty 1.1 unless told otherwise: greedy needs 1.0
            body = {"prompt": prompt, "max_tokens": 20, "temperature": 0, "repeat_penalty": 1.0}
            got = post_json(server.url + "/v1/completions", body, timeout=60)
            choice = got["choices"][0]
            n, problem = compare(choice["text"], steps, tok, BOUNDS[ftype])
            assert problem is None, (prompt, choice["text"], problem)
            agreed += n
            stopped = [s.token for s in steps[: n + 1]][-1:] == [EOS]
            assert choice["finish_reason"] == ("stop" if stopped else "length")
            # the server's own tokenization of the prompt is the reference implementation's: <bos> (id 1)
            # and the text, nothing else (no <eos>, no <sep>)
            served = post_json(server.url + "/extras/tokenize", {"input": prompt}, timeout=60)["tokens"]
            assert served == ids and served[0] == 1 and EOS not in served and 4 not in served, (prompt, served)
            assert got["usage"]["prompt_tokens"] == len(ids)
        if ftype == "F16":  # what a client that sends only temperature 0 gets: repeat-penalised, not greedy
            got = post_json(
                server.url + "/v1/completions", {"prompt": reference["prompts"][0], "max_tokens": 20, "temperature": 0}
            )
            assert compare(got["choices"][0]["text"], native_steps[0], tok, 0.0)[1] is not None
    # of the 3 prompts' 56 native tokens (20, 16 up to <eos>, 20): F16 all; Q8_0 all but the third
    # prompt's from its 4th token on, where native's top two logits are 0.022 apart
    assert agreed == {"F16": 56, "Q8_0": 39}[ftype]


@pytest.mark.skipif(not AMX, reason="this CPU has no AMX: llama.cpp's AMX path (the crash) is not taken")
def test_stock_server_crashes_on_q8_0_with_amx(ggufs, reference, tmp_path):
    """Why mythos_convert.llama_server exists: the stock server segfaults on the first Q8_0 completion."""
    with llama_server(STOCK, ggufs["Q8_0"], tmp_path / "server.log") as server:
        with pytest.raises(OSError):  # the connection drops: the process died mid-request
            post_json(server.url + "/v1/completions", {"prompt": "The model", "max_tokens": 4, "temperature": 0})
        assert server.process.wait(timeout=30) == -signal.SIGSEGV


def test_wrapped_server_serves_q4_0_on_repacked_weights_never_amx(ggufs, reference, tmp_path):
    """The wrapper is the stock server less AMX: Q4_0 goes into llama.cpp's CPU_REPACK buffer (its
    load log says so), nothing into AMX, and the completion is what llama.cpp computes in process on
    the same repacked weights, token for token."""
    from llama_cpp import Llama

    log = tmp_path / "server.log"
    prompt = reference["prompts"][0]
    body = {"prompt": prompt, "max_tokens": 20, "temperature": 0, "repeat_penalty": 1.0}
    with llama_server(WRAPPED, ggufs["Q4_0"], log, verbose=True) as server:
        served = post_json(server.url + "/v1/completions", body, timeout=60)["choices"][0]["text"]
    loaded = log.read_text(errors="replace")
    assert "AMX model buffer" not in loaded
    assert ("CPU_REPACK model buffer size" in loaded) == can_repack(), loaded[-2000:]
    with repacked_weights():
        llm = Llama(model_path=str(ggufs["Q4_0"]), n_ctx=128, n_threads=1, seed=0, verbose=False)
    try:
        expected = llm.create_completion(prompt, max_tokens=20, temperature=0, repeat_penalty=1.0)
    finally:
        llm.close()
    assert served == expected["choices"][0]["text"] and served


def _post_raw(url: str, data: bytes) -> tuple[int, dict]:
    """POST bytes as JSON; (status, the JSON answer, or {"text": ...} when it is not JSON) whatever
    the status (no proxy, as servers.py asks)."""
    import json
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with opener.open(request, timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, {"text": raw.decode(errors="replace")}


def test_wrapped_server_answers_client_errors_with_4xx(ggufs, tmp_path):
    """A request the client got wrong is the client's error: unparseable JSON 400, a body of the wrong
    shape 422 (as FastAPI answers), each with an OpenAI-style error naming the problem; the server
    keeps serving after both (the stock server answers 500 to both)."""
    with llama_server(WRAPPED, ggufs["F16"], tmp_path / "server.log") as server:
        url = server.url + "/v1/completions"
        status, body = _post_raw(url, b'{"prompt": "The model", "max_tokens": ')
        assert status == 400 and body["error"]["type"] == "invalid_request_error", (status, body)
        assert "not valid JSON" in body["error"]["message"]
        status, body = _post_raw(url, b'{"prompt": "The model", "max_tokens": "many"}')
        assert status == 422 and body["error"]["type"] == "invalid_request_error", (status, body)
        assert "max_tokens" in body["error"]["message"] and body["error"]["param"] == "max_tokens"
        status, body = _post_raw(url, b"[1, 2]")
        assert status == 422, (status, body)
        status, body = _post_raw(url, b'{"prompt": "The model", "max_tokens": 2, "temperature": 0}')
        assert status == 200 and body["choices"][0]["text"], (status, body)
