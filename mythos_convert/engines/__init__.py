"""Runtimes reduced to one call each: token ids -> logits, and greedy tokens."""
