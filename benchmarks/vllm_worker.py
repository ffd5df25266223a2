"""Run inside the vLLM (CPU) venv for bench_generate.py: time greedy generation at batch 1 and batch N.

argv: the HF folder, a JSON job {"prompts": [[ids], ...], "new_tokens": N, "repeats": R, "dtype": D},
the JSON file to write. The engine loads once (its start-up is not timed), one warm-up call runs,
then each timed call is `LLM.generate` on token ids with temperature 0 and `ignore_eos`, so every
sequence gets exactly N new tokens. A script file under `__main__`: vLLM spawns its workers.
"""

import json
import sys
import time
from pathlib import Path


def main() -> None:
    import vllm
    from vllm import LLM, SamplingParams

    folder, job, answer = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
    prompts = [{"prompt_token_ids": ids} for ids in job["prompts"]]
    started = time.perf_counter()
    llm = LLM(model=folder, dtype=job["dtype"], seed=0, enable_prefix_caching=False)
    load_s = time.perf_counter() - started
    n = job["new_tokens"]
    greedy = SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)
    one = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    llm.generate(prompts, greedy, use_tqdm=False)  # warm-up: every batch shape once

    def timed(batch, params):
        t0 = time.perf_counter()
        outs = llm.generate(batch, params, use_tqdm=False)
        return time.perf_counter() - t0, [list(o.outputs[0].token_ids) for o in outs]

    runs = {"batch1": [], "first": [], "batchN": []}
    for _ in range(job["repeats"]):  # interleaved, so a burst of load elsewhere hits all three alike
        runs["first"].append(timed(prompts[:1], one)[0])
        total, ids = timed(prompts[:1], greedy)
        runs["batch1"].append({"total_s": total, "ids": ids[0]})
        total, ids = timed(prompts, greedy)
        runs["batchN"].append({"total_s": total, "ids": ids})
    config = llm.llm_engine.model_config
    answer.write_text(
        json.dumps({"vllm": vllm.__version__, "dtype": str(config.dtype), "load_s": load_s, **runs}), encoding="utf-8"
    )


if __name__ == "__main__":
    main()
