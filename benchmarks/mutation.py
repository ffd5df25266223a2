"""Mutation testing of the proof code: how many small bugs put into it do its tests catch?

    python benchmarks/mutation.py                      # every package below, one after the other
    python benchmarks/mutation.py verify evaluate      # some of them
    python benchmarks/mutation.py --list               # the packages, their files and their tests
    python benchmarks/mutation.py --report verify      # the score of the last run, without running
    python benchmarks/mutation.py verify --tests-from REV   # the same code against an older revision's tests
    python benchmarks/mutation.py verify --rerun 'mythos_convert.verify.digests*'   # again, after new tests

Uses mutmut 3 (the `test` extra pins it). Each package runs in its own scratch copy,
`.mutation/<package>/` (git-ignored), against only the test files that cover it, so a run takes
minutes rather than the whole suite's time; mutmut then runs, per mutant, only the tests that
called the mutated function. Results are cached there: a second run tries only new mutants
(`--fresh` starts over). `mutmut browse` / `mutmut show NAME` inside the scratch folder show a
survivor's diff. The score is killed / (mutants - equivalent), equivalent being the survivors the
table in docs/mutation.md names with a reason (`EQUIVALENT` below).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / ".mutation"
REFERENCE = ROOT.parent / "shared"  # tests/helpers.py finds the reference fixture two levels up


@dataclass(frozen=True)
class Package:
    """Files to mutate (globs relative to the repository), the test files that cover them, and tests
    left out (node ids) because one run of them takes seconds: each surviving mutant would rerun it."""

    mutate: tuple[str, ...]
    tests: tuple[str, ...]
    deselect: tuple[str, ...] = ()


PACKAGES: dict[str, Package] = {
    "verify": Package(
        (
            "mythos_convert/verify/gates.py",
            "mythos_convert/verify/parity.py",
            "mythos_convert/verify/inputs.py",
            "mythos_convert/verify/cores.py",
            "mythos_convert/verify/digests.py",
        ),
        (
            "tests/test_verify_gates.py",
            "tests/test_verify_greedy.py",
            "tests/test_verify_nonfinite.py",
            "tests/test_verify_digests.py",
            "tests/test_mut_verify.py",
        ),
        ("tests/test_verify_nonfinite.py::test_hf_export_of_a_nan_checkpoint_fails_verify",),
    ),
    "engines": Package(
        ("mythos_convert/engines/divergence.py", "mythos_convert/engines/native.py"),
        ("tests/test_divergence.py", "tests/test_verify_greedy.py", "tests/test_mut_engines.py"),
    ),
    "evaluate": Package(
        ("mythos_convert/evaluate/perplexity.py", "mythos_convert/evaluate/record.py"),
        ("tests/test_eval_units.py", "tests/test_divergence.py", "tests/test_mut_evaluate.py"),
    ),
    "export": Package(
        ("mythos_convert/export/gguf_header.py", "mythos_convert/export/modelfile.py"),
        (
            "tests/test_config_values.py",
            "tests/test_names_config.py",
            "tests/test_ollama_modelfile.py",
            "tests/test_mut_export.py",
        ),
    ),
    "safe_paths": Package(
        ("mythos_convert/support/safe_paths.py",),
        ("tests/test_safe_paths.py", "tests/test_containment.py", "tests/test_mut_safe_paths.py"),
    ),
    # test_push.py runs a Hub emulator over a verified export in each mutant's fresh process: minutes each
    "hub_checks": Package(("mythos_convert/hub/checks.py",), ("tests/test_mut_hub_checks.py",)),
    "imatrix": Package(("mythos_convert/quant/imatrix.py",), ("tests/test_imatrix.py", "tests/test_mut_imatrix.py")),
    "verify_record": Package(
        ("mythos_convert/verify/record.py", "mythos_convert/verify/localise.py"),
        ("tests/test_verify_digests.py", "tests/test_mut_verify_record.py", "tests/test_mut_verify_localise.py"),
    ),
    "verify_checks": Package(
        ("mythos_convert/verify/gguf_tensors.py", "mythos_convert/verify/hf_tokenizer.py"),
        ("tests/test_names_config.py", "tests/test_mut_verify_tensors.py", "tests/test_mut_verify_hf_tokenizer.py"),
    ),
    "verify_reference": Package(("mythos_convert/verify/reference.py",), ("tests/test_mut_verify_reference.py",)),
    "export_parts": Package(
        (
            "mythos_convert/export/gguf_plan.py",
            "mythos_convert/export/gguf_vocab.py",
            "mythos_convert/export/tokenizer_files.py",
        ),
        ("tests/test_tokenizer_export.py", "tests/test_mut_export_plan.py", "tests/test_mut_export_vocab.py"),
    ),
    "export_native": Package(
        ("mythos_convert/export/native.py",), ("tests/test_native_roundtrip.py", "tests/test_mut_export_native.py")
    ),
    "export_encode": Package(("mythos_convert/export/gguf_encode.py",), ("tests/test_mut_export_encode.py",)),
    "evaluate_targets": Package(("mythos_convert/evaluate/targets.py",), ("tests/test_mut_evaluate_targets.py",)),
    "evaluate_measure": Package(
        ("mythos_convert/evaluate/measure.py",), ("tests/test_eval_units.py", "tests/test_mut_evaluate_measure.py")
    ),
    "evaluate_report": Package(
        ("mythos_convert/evaluate/report.py",), ("tests/test_eval_units.py", "tests/test_mut_evaluate_report.py")
    ),
}
# a mutant whose tests hang or crash the interpreter (a KV cache overrun in the compiled kernels) is caught
CAUGHT = ("killed", "timeout", "segfault")
PYTEST_ARGS = ["-p", "no:cacheprovider", "-q", "-o", "addopts=", "-m", "not llama_cpp and not slow"]
# survivors judged equivalent (docs/mutation.md says why for each), by mutmut's mutant name
EQUIVALENT: set[str] = {
    f"mythos_convert.{name}"
    for name in (
        *(f"verify.cores.x__machine_busy_s__mutmut_{n}" for n in (5, 6, 7, 8)),
        "verify.cores.xǁOtherLoadǁcores__mutmut_4",
        "verify.digests.xǁDigestsǁclose__mutmut_3",
        *(f"engines.divergence.xǁDivergenceAccumulatorǁsummary__mutmut_{n}" for n in (12, 14, 15)),
        *(f"engines.native.x_native_engine__mutmut_{n}" for n in (10, 12)),
        *(f"quant.imatrix.x_compute_imatrix__mutmut_{n}" for n in (26, 28)),
        "hub.checks.x_check_card__mutmut_7",
        "hub.checks.x_check_verify__mutmut_72",
        *(f"verify.parity.x__first_nonfinite__mutmut_{n}" for n in (9, 27)),
        *(f"verify.parity.x_compare_logits__mutmut_{n}" for n in (10, 14)),
        *(f"verify.parity.x_merge_comparisons__mutmut_{n}" for n in (4, 40, 43, 44, 54, 57, 58)),
        "verify.inputs.x_random_ids__mutmut_7",
        *(f"verify.localise.x_localise__mutmut_{n}" for n in (9, 19, 31, 35, 36)),
        *(f"verify.reference.x_native_reference__mutmut_{n}" for n in (22, 24)),
        *(f"verify.hf_tokenizer.x_tokenizer_checks__mutmut_{n}" for n in (4, 5, 6)),
        "verify.hf_tokenizer.x__vocab_differences__mutmut_6",
        *(f"verify.gguf_tensors.x__rel_error__mutmut_{n}" for n in (6, 11)),
        *(f"verify.gguf_tensors.x__diagnose__mutmut_{n}" for n in (26, 27, 70, 80)),
        "verify.gguf_tensors.x__head_counts__mutmut_9",
        *(f"evaluate.record.x_load_eval__mutmut_{n}" for n in (6, 8)),
        "evaluate.perplexity.x_nll_from_log_probs__mutmut_8",
        "export.gguf_plan.x_parse_size__mutmut_17",
        "export.gguf_vocab.x_build_vocab__mutmut_57",
        "export.tokenizer_files.x_bos_only_tokenizer_json__mutmut_3",
        *(f"export.native.x__tokenizer_json__mutmut_{n}" for n in (16, 26)),
        *(f"export.native.x_export_native__mutmut_{n}" for n in (26, 34)),
        *(f"export.gguf_encode.x_encode__mutmut_{n}" for n in (26, 28, 30, 47)),
        *(f"export.gguf_encode.xǁParallelEncoderǁencode_all__mutmut_{n}" for n in (36, 38, 40, 54, 56, 65, 71)),
        *(f"export.gguf_encode.xǁParallelEncoderǁencode_all__mutmut_{n}" for n in (105, 115, 119, 123)),
        *(f"evaluate.report.x_record_report__mutmut_{n}" for n in (14, 15)),
        *(f"evaluate.measure.x_measure__mutmut_{n}" for n in (26, 38)),
        "evaluate.measure.x__vocab_rows__mutmut_4",
        *(f"support.safe_paths.x__kind__mutmut_{n}" for n in (15, 16)),
        "support.safe_paths.x_inside__mutmut_22",
        *(f"support.safe_paths.x_scan_folder__mutmut_{n}" for n in (6, 8, 9)),
    )
}


def _prepare(name: str, package: Package, fresh: bool, tests_from: str | None) -> Path:
    """A scratch copy of the repository for one package, the reference fixture linked where tests look.

    `tests_from`: a git revision whose tests/ to use instead of the working tree's (the score before
    a change to the tests, on the code as it is now).
    """
    work = SCRATCH / (f"{name}@{tests_from}" if tests_from else name)
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for folder in ("mythos_convert", "model_card", "tests"):
        shutil.rmtree(work / folder, ignore_errors=True)
        if folder == "tests" and tests_from:
            archive = subprocess.run(["git", "archive", tests_from, "tests"], cwd=ROOT, capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(work)], input=archive.stdout, check=True)
        else:
            shutil.copytree(ROOT / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    tests = [t for t in package.tests if (work / t).is_file()]
    # mutmut copies from here into mutants/; a source unchanged since the last run keeps its results
    mutants = work / "mutants"
    if mutants.exists():
        for folder in ("tests", "model_card"):
            shutil.rmtree(mutants / folder, ignore_errors=True)
    link = work / "shared"
    if REFERENCE.exists() and not link.exists():
        link.symlink_to(REFERENCE)
    lines = [
        "[tool.mutmut]",
        'source_paths = ["mythos_convert"]',
        f"only_mutate = {list(package.mutate)!r}",
        'also_copy = ["model_card"]',
        f"pytest_add_cli_args_test_selection = {tests!r}",
        # llama.cpp end-to-end runs take tens of seconds each: the unit tests carry the score
        f"pytest_add_cli_args = {[*PYTEST_ARGS, *(f'--deselect={t}' for t in package.deselect)]!r}",
        "timeout_multiplier = 5.0",
        # torch's thread pool does not survive a fork: a fresh server forks each mutant's process
        'process_isolation = "forkserver"',
        "",
    ]
    (work / "pyproject.toml").write_text("\n".join(lines).replace("'", '"'))
    return work


def _counts(work: Path) -> dict[str, list[str]]:
    """Mutant names by status, from `mutmut results --all true`."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work, capture_output=True, text=True
    ).stdout
    by_status: dict[str, list[str]] = {}
    for line in out.splitlines():
        if ":" not in line:
            continue
        mutant, status = (part.strip() for part in line.rsplit(":", 1))
        by_status.setdefault(status, []).append(mutant)
    return by_status


def _report(name: str, work: Path) -> tuple[int, int, int]:
    """Print one package's score; returns (mutants, killed, equivalent)."""
    by_status = _counts(work)
    total = sum(len(v) for v in by_status.values())
    killed = sum(len(by_status.get(status, [])) for status in CAUGHT)
    left = [m for status, names in by_status.items() if status not in CAUGHT for m in names]
    equivalent = [m for m in left if m in EQUIVALENT]
    live = total - len(equivalent)
    score = 100.0 * killed / live if live else 100.0
    print(f"{name}: {total} mutants, {killed} killed, {len(equivalent)} equivalent, score {score:.1f}%")
    for mutant in sorted(set(left) - set(equivalent)):
        status = next(s for s, names in by_status.items() if mutant in names)
        print(f"    {status}: {mutant}")
    return total, killed, len(equivalent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", choices=[*PACKAGES, []], help="default: all")
    parser.add_argument("--list", action="store_true", help="print the packages and their tests")
    parser.add_argument("--report", action="store_true", help="print the last run's score only")
    parser.add_argument("--fresh", action="store_true", help="forget cached results")
    parser.add_argument("--rerun", metavar="GLOB", nargs="+", help="try these mutants again (after adding tests)")
    parser.add_argument("--tests-from", metavar="REV", help="score the tests of a git revision (e.g. before a change)")
    parser.add_argument("--max-children", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    args = parser.parse_args(argv)
    names = args.packages or list(PACKAGES)
    if args.list:
        for name in names:
            print(f"{name}: {', '.join(PACKAGES[name].mutate)}\n    tests: {', '.join(PACKAGES[name].tests)}")
        return 0
    for name in names:
        work = SCRATCH / (f"{name}@{args.tests_from}" if args.tests_from else name)
        if not args.report:
            work = _prepare(name, PACKAGES[name], args.fresh, args.tests_from)
            # one thread per mutant process: no pool to deadlock after the fork, no oversubscription
            env = {**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            subprocess.run(
                [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children), *(args.rerun or [])],
                cwd=work,
                env=env,
            )
        _report(name, work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
