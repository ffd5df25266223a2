"""`mythos-convert eval`: perplexity of every format, and what each quantization costs in KL divergence.

- `perplexity.py`: the windows and which predictions of each are scored (llama-perplexity's rule).
- `engines.py`: the native model, transformers and llama.cpp, each as "token window -> logits".
- `run.py`: targets, the float32 reference, the loop over windows, the report.
- `record.py`: `eval.json` beside `verify.json`, each result bound to the sha256 of its files.
- `chart.py`: size against KL divergence, one point per GGUF type (matplotlib, optional).
"""
