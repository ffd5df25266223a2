"""mythos-convert: publish a LLaMA-style model trained from scratch ("Mythos") to the open ecosystem."""

__version__ = "0.1.0"
