"""Runs inside a Python that has mlx-lm (the `mlx` extra, or a separate venv): only mlx-lm's own calls.

Run as a script, never imported by mythos_convert: the interpreter may lack torch and this
package. Two commands, results as one JSON line on stdout:

- `convert HF OUT BITS GROUP`: `mlx_lm.convert(quantize=True)`, mlx-lm's own quantizer and writer.
- `run FOLDER REQUEST OUT_NPZ`: `mlx_lm.load`, then for each id sequence of REQUEST (JSON:
  {"seqs": [[ids]], "greedy": N}) the logits at every position (into OUT_NPZ as `logits_i`) and
  N greedy tokens through `mlx_lm.generate.generate_step` (its KV cache, as users generate).
- `serve FOLDER`: `mlx_lm.load` once, print what was loaded, then one request per stdin line
  (JSON: {"ids": [ids], "out": path}): the logits at every position saved to `out` (.npy,
  float32), answered by one line on stdout; ends at end of input (`eval` runs its windows so).
"""

from __future__ import annotations

import json
import sys


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("mlx", "mlx-lm")}


def convert(hf: str, out: str, bits: int, group_size: int) -> dict:
    from mlx_lm import convert as mlx_convert

    mlx_convert(hf, out, quantize=True, q_bits=bits, q_group_size=group_size)
    return {"versions": _versions()}


def run(folder: str, request: str, out_npz: str) -> dict:
    import mlx.core as mx
    import numpy as np
    from mlx_lm import load
    from mlx_lm.generate import generate_step

    spec = json.loads(open(request).read())
    model, _tokenizer, config = load(folder, return_config=True)
    arrays, greedy = {}, []
    for i, ids in enumerate(spec["seqs"]):
        logits = model(mx.array([ids]))[0].astype(mx.float32)
        arrays[f"logits_{i}"] = np.array(logits)
        steps = generate_step(mx.array(ids), model, max_tokens=spec["greedy"], sampler=lambda x: mx.argmax(x, axis=-1))
        greedy.append([int(token) for token, _ in steps])
    np.savez(out_npz, **arrays)
    return {
        "versions": _versions(),
        "device": str(mx.default_device()),
        "greedy": greedy,
        "rope_theta": getattr(model.args, "rope_theta", None),
        "tie_word_embeddings": getattr(model.args, "tie_word_embeddings", None),
        "quantization": config.get("quantization"),
    }


def serve(folder: str) -> None:
    import mlx.core as mx
    import numpy as np
    from mlx_lm import load

    model, _tokenizer, config = load(folder, return_config=True)
    ready = {"versions": _versions(), "device": str(mx.default_device()), "quantization": config.get("quantization")}
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        logits = model(mx.array([request["ids"]]))[0].astype(mx.float32)
        np.save(request["out"], np.array(logits))
        print(json.dumps({"saved": request["out"]}), flush=True)


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "convert":
        out = convert(args[0], args[1], int(args[2]), int(args[3]))
    elif command == "run":
        out = run(*args)
    elif command == "serve":
        return serve(*args)
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
