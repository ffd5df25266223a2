"""Model files as stored: native checkpoints, safetensors, HF folders, GGUF names, release metadata."""
