"""Run inside the vLLM (CPU) venv: load an exported folder with `vllm.LLM` and print what vLLM makes of it.

argv: folder, JSON {"ids": [[...]], "prompts": [...], "max_tokens": N, "logprobs": K, "dtype": "auto"|...},
the JSON file to write (vLLM logs to standard output, so the answer goes to a file). A script file with `if __name__ == "__main__":` because vLLM spawns its
engine and worker processes, which re-import the main module (from standard input they cannot).
No mythos_convert here: it is not installed in that venv.
"""

import json
import sys
import time
from pathlib import Path


def main() -> None:
    import torch
    import transformers
    import vllm
    from vllm import LLM, SamplingParams

    folder, job = sys.argv[1], json.loads(sys.argv[2])
    started = time.perf_counter()
    llm = LLM(model=folder, dtype=job.get("dtype", "auto"), seed=0)
    loaded = time.perf_counter()
    greedy = SamplingParams(temperature=0, max_tokens=job["max_tokens"], logprobs=job["logprobs"], ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": ids} for ids in job["ids"]], greedy)
    texts = llm.generate(job["prompts"], SamplingParams(temperature=0, max_tokens=1))
    defaults = llm.get_default_sampling_params()
    config = llm.llm_engine.model_config
    Path(sys.argv[3]).write_text(
        json.dumps(
            {
                "versions": {
                    "vllm": vllm.__version__,
                    "transformers": transformers.__version__,
                    "torch": torch.__version__,
                },
                "isa": {
                    "avx512": torch.cpu._is_avx512_supported(),
                    "avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
                    "amx": torch.cpu._is_amx_tile_supported(),
                },
                "dtype": str(config.dtype),
                "max_model_len": config.max_model_len,
                "load_s": loaded - started,
                "tokens": [list(o.outputs[0].token_ids) for o in outs],
                "logprobs": [
                    [{str(t): lp.logprob for t, lp in step.items()} for step in o.outputs[0].logprobs] for o in outs
                ],
                "prompt_ids": [list(o.prompt_token_ids) for o in texts],
                "default_sampling": {"temperature": defaults.temperature, "top_p": defaults.top_p},
            }
        )
    )


if __name__ == "__main__":
    main()
