"""Runtimes reduced to one interface (`base.Engine`): token ids -> float32 logits [T, V], and greedy tokens.

One module per runtime: `native` (the Mythos model in torch), `hf` (transformers' LlamaForCausalLM),
`llamacpp` (llama-cpp-python; `llama_buffers` keeps it off AMX). `divergence` measures how far one
engine's next-token distribution is from another's: verify's quantized gates and eval's report
both use it, so it sits here, below both. Nothing here imports verify or evaluate.
"""
