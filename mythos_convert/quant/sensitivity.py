"""What quantizing one tensor to one type costs the model: measured KL, an imatrix proxy, or both.

The search (`quant/search.py`) needs, for each weight tensor t and candidate type q, a cost
c(t, q) such that the summed costs of a whole recipe rank recipes like the file's KL divergence
from the float32 model does. Three ways, all on the native float32 torch model:

- `measured`: the model with only t quantized-then-dequantized (the bytes llama.cpp writes,
  `kquants.quantize`, read back with gguf-py's `dequantize`) runs the calibration windows, and
  c(t, q) is the mean per-token KL(float32 || quantized). Exact for one tensor, but one forward
  pass over the calibration text per (tensor, type): ~10 types x 7 tensors per layer.
- `proxy`: c(t, q) = sum_ij m_j (W - Q(W))_ij^2, with m_j llama.cpp's importance weight of
  input column j (the mean squared activation entering the product, `quant/imatrix.py`; ones
  for the embedding, which has none). It is E||(W - Q(W)) x||^2 for inputs with uncorrelated
  columns: the error added to the product's output, the quantity the imatrix quantizers
  themselves minimise (`make_qx_quants` with `quant_weights`). No forward pass at all, but it
  does not know how much the rest of the network amplifies an output error, so it compares
  types of one tensor far better than tensors with each other.
- `hybrid` (the default): one measured KL per tensor, at the lowest-bit type it allows (where
  the KL stands furthest above float noise), and the proxy's ratio for the other types:
  c(t, q) = KL(t, q_low) * proxy(t, q) / proxy(t, q_low). Under the second-order view of KL
  (KL ~ 1/2 d^T F d for a weight error d; the first-order term vanishes at the float model), a
  tensor's Fisher block scales with how much the network amplifies its output error, which the
  one measurement captures, while the error's size per type is what the proxy measures.
  One forward pass per tensor: 7 per layer, a tenth of `measured`.

Summing per-tensor costs assumes the tensors' errors add independently (the cross terms of
the Fisher matrix are ignored), the assumption of HAWQ-style and llama.cpp's `--target-bpw`
allocations; the search reports the measured KL of the file it chooses, so a failure of that
assumption shows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import gguf
import numpy as np
import torch
import torch.nn.functional as F

from mythos_convert.model.layers import linear, signed_sin
from mythos_convert.model.model import Mythos
from mythos_convert.names import convert_name
from mythos_convert.quant import kquants
from mythos_convert.quant.types import row_fallback
from mythos_convert.support.ui import track

Q = gguf.GGMLQuantizationType
# llama.cpp's K-quants and legacy types (no IQ types: they need an imatrix and their own search)
CANDIDATES = (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.F16)
METHODS = ("hybrid", "measured", "proxy")


def candidate_types(row: int) -> list[gguf.GGMLQuantizationType]:
    """The types a tensor with rows of `row` values can really get: each candidate after
    llama.cpp's row-size fallback (`tensor_type_fallback`), duplicates dropped."""
    return list(dict.fromkeys(row_fallback(qtype, row)[0] for qtype in CANDIDATES))


def bits_per_weight(qtype: gguf.GGMLQuantizationType) -> float:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return 8 * size / block


def roundtrip(weight: np.ndarray, qtype: gguf.GGMLQuantizationType, imatrix: np.ndarray | None) -> np.ndarray:
    """`weight` as a file of `qtype` gives it back to llama.cpp: quantized like llama-quantize, dequantized."""
    rows = np.ascontiguousarray(weight, dtype=np.float32)
    if qtype == Q.F16:
        return rows.astype(np.float16).astype(np.float32)
    if imatrix is not None and qtype not in kquants.K_TYPES + kquants.IMATRIX_LEGACY_TYPES:
        imatrix = None  # Q8_0 ignores an imatrix in llama.cpp
    data = kquants.quantize(rows, qtype, imatrix)
    return gguf.quants.dequantize(data, qtype).reshape(rows.shape).astype(np.float32)


def proxy_cost(weight: np.ndarray, approx: np.ndarray, imatrix: np.ndarray | None) -> float:
    """sum_ij m_j (W - Q(W))_ij^2: the output error the importance weights predict."""
    err = np.square(weight.astype(np.float64) - approx.astype(np.float64)).sum(axis=0)
    return float(err @ (imatrix.astype(np.float64) if imatrix is not None else np.ones_like(err)))


class KLProbe:
    """The float32 model's log-probabilities on calibration windows, and the mean per-token KL
    of the same model with some weights replaced.

    Each window's input to every layer is kept, so replacing a weight of layer L re-runs only
    layers L.. and the head (half the model on average; the embedding, tied to the head, runs
    it all). The layers are called as `Mythos.forward` calls them, without a cache. Windows of
    one length run as one batch (measured 1.6-2.3x faster than one at a time on mythos-172m's
    layers, AMD EPYC, one thread).
    """

    def __init__(self, model: Mythos, windows: Sequence[np.ndarray]):
        self.model = model.float().eval()
        self.params = dict(model.named_parameters())
        by_length: dict[int, list[np.ndarray]] = {}
        for w in windows:
            by_length.setdefault(len(w), []).append(np.asarray(w, dtype=np.int64))
        self.tokens = [torch.from_numpy(np.stack(group)) for group in by_length.values()]
        with torch.no_grad():
            self.hidden = [self._layer_inputs(x) for x in self.tokens]
            self.reference = [F.log_softmax(self._head(h[-1]), dim=-1) for h in self.hidden]

    def _rope(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.rope_cos[:n], signed_sin(self.model.rope_sin[:n])

    def _layer_inputs(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """The input of every layer, then the last layer's output."""
        cos, sin = self._rope(tokens.shape[1])
        states = [self.model.embedding(tokens)]
        for layer in self.model.layers:
            states.append(layer(states[-1], cos, sin, 0, None))
        return states

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self.model.norm(x), self.model.output.weight).float()

    def logits(self, window: int, first_layer: int) -> torch.Tensor:
        """Batch `window`'s logits, running the layers from `first_layer` on its kept input
        (from the embedding when `first_layer` is -1)."""
        if first_layer < 0:
            x, first_layer = self.model.embedding(self.tokens[window]), 0
        else:
            x = self.hidden[window][first_layer]
        cos, sin = self._rope(x.shape[1])
        for layer in self.model.layers[first_layer:]:
            x = layer(x, cos, sin, 0, None)
        return self._head(x)

    def kl(self, replaced: dict[str, np.ndarray]) -> float:
        """Mean KL(float32 || model with `replaced` native weights) per token; the weights are restored.

        Each replaced parameter is pointed at the new values and back, never written into: a model
        opened from a float32 safetensors file holds its weights in the file's read-only mapping.
        """
        first = min(_layer_of(name) for name in replaced)
        saved = {name: self.params[name].data for name in replaced}
        total, count = 0.0, 0
        try:
            for name, value in replaced.items():
                self.params[name].data = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
            with torch.no_grad():
                for i, ref in enumerate(self.reference):
                    logq = F.log_softmax(self.logits(i, first), dim=-1)
                    total += float((ref.exp() * (ref - logq)).sum(dim=-1).sum())
                    count += ref.shape[0] * ref.shape[1]
        finally:
            for name, data in saved.items():
                self.params[name].data = data
        return total / count


@dataclass(frozen=True)
class Sensitivity:
    """c(t, q) for every weight tensor t (GGUF name) and candidate type q, and the proxy's own figures."""

    costs: dict[str, dict[gguf.GGMLQuantizationType, float]]
    proxy: dict[str, dict[gguf.GGMLQuantizationType, float]]
    method: str


def _layer_of(native: str) -> int:
    """The layer a native weight is in; -1 for the embedding (the tied head: everything runs)."""
    match = re.match(r"layers\.(\d+)\.", native)
    return int(match.group(1)) if match else -1


def native_weights(model: Mythos, names: Sequence[str]) -> dict[str, np.ndarray]:
    """GGUF name -> the float32 native weight (rows as llama.cpp quantizes them: the q/k
    permutation only reorders rows, which a per-row quantizer does not see)."""
    params = dict(model.named_parameters())
    return {name: params[convert_name(name, "gguf", "native")].detach().float().numpy() for name in names}


def measure(
    model: Mythos,
    names: Sequence[str],
    windows: Sequence[np.ndarray],
    imatrix: dict[str, np.ndarray] | None = None,
    *,
    method: str = "hybrid",
) -> Sensitivity:
    """Every weight tensor's cost at every candidate type (see the module docstring for `method`).

    `names` are the GGUF names of the matrices to choose types for; `imatrix` maps GGUF names
    to per-column importance (llama.cpp has none for the embedding); `windows` are calibration
    token windows (not the text the result is scored on).
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r}: expected one of {METHODS}")
    imatrix = imatrix or {}
    weights = native_weights(model, names)
    probe = KLProbe(model, windows) if method != "proxy" else None
    costs, proxies = {}, {}
    for name in track(list(names), f"measuring tensor sensitivity ({method})"):
        costs[name], proxies[name] = _tensor_costs(name, weights[name], imatrix.get(name), probe, method)
    return Sensitivity(costs, proxies, method)


def _tensor_costs(
    name: str, weight: np.ndarray, imatrix: np.ndarray | None, probe: KLProbe | None, method: str
) -> tuple[dict[gguf.GGMLQuantizationType, float], dict[gguf.GGMLQuantizationType, float]]:
    native = convert_name(name, "gguf", "native")
    approx = {qtype: roundtrip(weight, qtype, imatrix) for qtype in candidate_types(weight.shape[-1])}
    proxy = {qtype: proxy_cost(weight, value, imatrix) for qtype, value in approx.items()}
    if probe is None:
        return dict(proxy), proxy
    if method == "measured":
        return {qtype: probe.kl({native: value}) for qtype, value in approx.items()}, proxy
    low = min(approx, key=bits_per_weight)  # the lowest-bit type the rows allow: the clearest measurement
    scale = probe.kl({native: approx[low]}) / proxy[low] if proxy[low] > 0 else 0.0
    return {qtype: scale * value for qtype, value in proxy.items()}, proxy


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (ties broken by order: the costs here are continuous)."""
    ra, rb = (np.argsort(np.argsort(np.asarray(x))).astype(np.float64) for x in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra @ ra) * (rb @ rb)))
    return float(ra @ rb) / denom if denom else 0.0


def recipe_weights(
    model: Mythos, recipe: dict[str, gguf.GGMLQuantizationType], imatrix: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Native name -> the weight as the file of `recipe` holds it (quantized, dequantized)."""
    weights = native_weights(model, list(recipe))
    imatrix = imatrix or {}
    return {
        convert_name(name, "gguf", "native"): roundtrip(weights[name], qtype, imatrix.get(name))
        for name, qtype in recipe.items()
    }


def file_kl(
    model: Mythos,
    recipe: dict[str, gguf.GGMLQuantizationType],
    windows: Sequence[np.ndarray],
    imatrix: dict[str, np.ndarray] | None = None,
) -> float:
    """Mean per-token KL(float32 || the file of `recipe`) on `windows`, with the native torch model."""
    return KLProbe(model, windows).kl(recipe_weights(model, recipe, imatrix))
