"""Run inside a transformers 4.x venv: load an exported folder and print what 4.x makes of it as JSON.

argv: folder, JSON list of token ids, JSON list of texts. Uses only transformers/torch APIs that
exist in 4.46 and 4.57 (and no mythos_convert, which is not importable there).
"""

import json
import sys

import huggingface_hub
import tokenizers
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, ids, texts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
model.eval()
tok = AutoTokenizer.from_pretrained(folder)
inv_freq = model.model.rotary_emb.inv_freq.double()
head_dim = model.config.hidden_size // model.config.num_attention_heads
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0]
    generated = model.generate(torch.tensor([ids[:16]]), max_new_tokens=12, do_sample=False, eos_token_id=None)
print(
    json.dumps(
        {
            "versions": {
                "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__,
                "huggingface_hub": huggingface_hub.__version__,
            },
            "files": {"transformers": transformers.__file__, "huggingface_hub": huggingface_hub.__file__},
            "loading_info": {k: [str(x) for x in v] for k, v in info.items()},
            "on_meta": [n for n, p in model.named_parameters() if p.device.type == "meta"],
            "tied": model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
            "rope_theta": float(inv_freq[1] ** (-head_dim / 2)),
            "rms_norm_eps": model.config.rms_norm_eps,
            "torch_dtype": str(model.config.torch_dtype),
            "tokenizer_class": type(tok).__name__,
            "bos_eos": [tok.bos_token_id, tok.eos_token_id],
            "encoded": [tok(t)["input_ids"] for t in texts],
            "logits": logits.tolist(),
            "generated": generated[0, 16:].tolist(),
        }
    )
)
