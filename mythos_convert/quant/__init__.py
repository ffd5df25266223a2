"""Quantization: llama.cpp's per-tensor type rules, its quantizers, importance matrices."""
