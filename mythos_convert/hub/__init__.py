"""The Hugging Face Hub: checks before a push, the push itself, the GGUF repository and the Space."""
