"""The demo's closing table in an 80-column terminal: it fits, only the figures wrap, paths stay whole."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from mythos_convert.demo import Artifact, DemoResult, _parity, summary_table

OUT = Path("/home/someone/projects/demo-out")
VERIFY = {"passed": True, "max_abs_diff": 9.18e-4, "argmax_agreement": 1.0, "greedy_equal": True}
EVAL_ROW = {"kl": {"mean_kl": 2.95e-6}}


def _result() -> DemoResult:
    result = DemoResult(out=OUT, checkpoint=OUT / "run" / "ckpt.pt", hf_folder=OUT / "hf")
    result.artifacts = [
        Artifact("checkpoint", OUT / "run" / "ckpt.pt", 10_475_000, "-", ""),
        Artifact("HF folder", OUT / "hf", 6_300_000, _parity(VERIFY), ""),
        Artifact("GGUF F16", OUT / "hf" / "mythos-853K-F16.gguf", 1_772_000, _parity(VERIFY, EVAL_ROW), ""),
        Artifact("GGUF Q8_0", OUT / "hf" / "mythos-853K-Q8_0.gguf", 973_600, _parity(VERIFY, EVAL_ROW), ""),
        Artifact("model card", OUT / "hf" / "README.md", 8_540, "-", ""),
    ]
    return result


def _render(width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(summary_table(_result()))
    return console.export_text().splitlines()


def test_the_table_fits_80_columns_and_keeps_paths_whole():
    lines = _render(80)
    assert max(len(line) for line in lines) <= 80
    for path in ("run/ckpt.pt", "hf/mythos-853K-F16.gguf", "hf/mythos-853K-Q8_0.gguf", "hf/README.md"):
        assert any(path in line for line in lines), path
    # the figures wrap between words, never inside a number
    text = " ".join(" ".join(lines).split())
    assert "max|diff| 9.2e-04" in text and "mean KL 3.0e-06" in text


def test_parity_text_names_every_figure():
    assert _parity(VERIFY, EVAL_ROW) == "ok: max|diff| 9.2e-04, top-1 100.0%, greedy equal, mean KL 3.0e-06"
    assert _parity({**VERIFY, "passed": False}).startswith("FAILED: ")
    assert _parity(None) == "-"
