"""`mythos-convert eval`: perplexity of every format, and what each quantization costs in KL divergence.

- `perplexity.py`: the windows and which predictions of each are scored (llama-perplexity's rule).
- `targets.py`: what is measured, each target a `ModelSource` (opened and checked by `open_source`),
  the tokenizer (the first target's that holds one), the shared vocabulary and context.
- `measure.py`: every engine (`engines/`) over every window, KL against the reference.
- `report.py`: one row per engine, recorded in eval.json, printed as a table, saved as JSON.
- `run.py`: `run_eval`, the steps in order: targets, the float32 reference, text, measure, report.
- `record.py`: `eval.json` beside `verify.json`, each result bound to the sha256 of its files.
- `chart.py`: size against KL divergence, one point per GGUF type (matplotlib, optional).
"""
