"""Writers: a ModelSource -> an HF folder, GGUF files, a native checkpoint."""
