"""GGUF export speed and memory on the mythos-172m architecture: `mythos-convert gguf` against
llama.cpp's own `convert_hf_to_gguf.py` (from the llama-cpp-python 0.3.36 sdist) and the copy floor.

Every row runs in a child process (best of `--repeats`), so wall seconds include interpreter start-up and imports, and
peak RSS is the child's own (`os.wait4` rusage). The parent stays small (setup and the byte
comparison run in children too), because Linux carries a parent's peak RSS into a forked child. The floor reads the source safetensors and writes
as many bytes as the GGUF has, with plain file I/O. llama.cpp's converter refuses our tokenizer
(unknown pre-tokenizer hash; without sentencepiece it aborts earlier): the script shows the
refusal, then runs it with those two checks patched out, in this benchmark only, so the weights
path is compared. Tensor data of both outputs is compared byte for byte per tensor.

K-quant rows compare with llama.cpp's own quantizer (`llama_model_quantize` through
llama-cpp-python), which starts from an F32 GGUF of the same weights (written by our f32 row's
exporter, outside the timing), at 1 thread and at 2 threads; ours runs at 1 and at 2 workers
(MYTHOS_QUANT_WORKERS), so each ratio compares the same thread count. The copy floor is the best
of `--repeats` runs like every other row, and every run starts after `sync` (one write of a few
hundred MB varies several-fold with the dirty pages left by the run before).

    python benchmarks/bench_gguf.py [--workdir DIR] [--outtypes f32,f16,bf16,q8_0,q4_0,q4_k_m,q5_k_m,q6_k]

`--baseline DIR --verify-all` measures `gguf --outtype all` with verify (every type written, each
verified in llama.cpp against the native reference), the baseline's and this checkout's in turn,
best of `--repeats`; the outputs and the verify results (less timestamps) must be equal.

    python benchmarks/bench_gguf.py --baseline /tmp/before --verify-all --arch tiny --repeats 3

`--baseline DIR` (another checkout of this package, e.g. a `git worktree` of main) measures
before/after instead: for each outtype, every repeat runs the baseline's export, this checkout's
and the floor in turn (so the three share the same minutes of a shared machine), each after
`sync`, with the load average before each repeat; no llama.cpp rows.

    python benchmarks/bench_gguf.py --workdir DIR --baseline /tmp/before --outtypes f32,f16,q8_0 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _shared import ARCH, bench_checkpoint, emit, machine

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
LLAMA_CPP_TYPES = ("f32", "f16", "bf16", "q8_0")  # what convert_hf_to_gguf.py can write in numpy
K_QUANTS = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")

LLAMA_QUANTIZE = """
import ctypes, sys
import llama_cpp
src, dst, ftype, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
params = llama_cpp.llama_model_quantize_default_params()
params.ftype, params.nthread = ftype, threads
sys.exit(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))
"""

OURS = """
import sys
from mythos_convert.support.ui import set_quiet
from mythos_convert.api import export_gguf
set_quiet(True)
export_gguf(sys.argv[1], sys.argv[2], outfile=sys.argv[3], verify=False, force=True)
"""

OURS_ALL = """
import sys
from mythos_convert.support.ui import set_quiet
from mythos_convert.api import export_gguf
set_quiet(True)
export = export_gguf(sys.argv[1], "all", outfile=sys.argv[2], verify=True, force=True)
failed = [name for name, r in export.verify.items() if not r["passed"]]
sys.exit(f"verify failed: {failed}" if failed else 0)
"""

FLOOR = """
import sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
chunk = 16 << 20
with open(src, "rb") as fin, open(dst, "wb") as fout:
    written = 0
    while block := fin.read(chunk):
        if written < n:
            fout.write(block[: n - written])
            written += min(len(block), n - written)
    while written < n:
        fout.write(bytes(min(chunk, n - written)))
        written += min(chunk, n - written)
"""

# llama.cpp's converter with its two refusals patched out (benchmark only).
LLAMA_PATCHED = """
import runpy, sys
root = sys.argv.pop(1)
sys.path[:0] = [root, root + "/gguf-py"]
from conversion import base
if "--keep-pre-check" in sys.argv:
    sys.argv.remove("--keep-pre-check")
else:
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
def _no_sentencepiece(self, *args, **kwargs):
    raise FileNotFoundError("sentencepiece model not used: a byte-level BPE")
base.TextModel._set_vocab_sentencepiece = _no_sentencepiece
sys.argv[0] = root + "/convert_hf_to_gguf.py"
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_child(args: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS MiB, exit code, stderr tail) of one child process, run in `cwd`.

    Dirty pages are flushed first (untimed): otherwise a run pays for writing back the previous
    run's output (several seconds for a few hundred MB here), whichever row happened to follow it.
    """
    os.sync()
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        environ = {**os.environ, **(env or {})}
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=environ, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
    return wall, usage.ru_maxrss / 1024, proc.returncode, " | ".join(tail)


def best_of(repeats: int, args: list[str], env: dict | None = None) -> tuple[float, float, int, str]:
    """The fastest of `repeats` runs (the least disturbed on a shared machine), its peak RSS the largest."""
    runs = [run_child(args, env) for _ in range(repeats)]
    wall = min(r[0] for r in runs)
    return wall, max(r[1] for r in runs), max(r[2] for r in runs), runs[-1][3]


def compare_with_baseline(baseline: Path, outtypes: list[str], repeats: int, hf_dir: Path, out: Path) -> None:
    """Baseline export, ours and the floor in turn, `repeats` times per outtype; best of each."""
    source = hf_dir / "model.safetensors"
    here = Path(__file__).resolve().parent.parent
    rows = []
    for outtype in outtypes:
        runs: dict[str, list[float]] = {"before": [], "after": [], "floor": []}
        rss: dict[str, float] = {"before": 0.0, "after": 0.0}
        loads = []
        for _ in range(repeats):
            loads.append(os.getloadavg()[0])
            for label, root in (("before", baseline), ("after", here)):
                path = out / f"{label}-{outtype}.gguf"
                # in the checkout itself: `python -c` imports the package from its working directory first
                command = [sys.executable, "-c", OURS, str(hf_dir.resolve()), outtype, str(path.resolve())]
                wall, peak, code, tail = run_child(command, {"PYTHONPATH": str(root)}, cwd=root)
                if code != 0:
                    raise SystemExit(f"{label} --outtype {outtype} failed: {tail}")
                runs[label].append(wall)
                rss[label] = max(rss[label], peak)
            size = (out / f"after-{outtype}.gguf").stat().st_size
            runs["floor"].append(
                run_child([sys.executable, "-c", FLOOR, str(source), str(out / "floor.bin"), str(size)])[0]
            )
        same = filecmp.cmp(out / f"before-{outtype}.gguf", out / f"after-{outtype}.gguf", shallow=False)  # in chunks
        floor = min(runs["floor"])
        best = {k: min(v) for k, v in runs.items()}
        rows.append(
            [
                outtype,
                f"{size / 1e6:.0f}",
                *(f"{best[k]:.2f} / {statistics.median(runs[k]):.2f} / {max(runs[k]):.2f}" for k in runs),
                f"{best['before'] / floor:.2f}",
                f"{best['after'] / floor:.2f}",
                f"{rss['before']:.0f} / {rss['after']:.0f}",
                f"{min(loads):.1f}-{max(loads):.1f}",
                "byte-identical" if same else "DIFFER",
            ]
        )
        for label in ("before", "after"):
            (out / f"{label}-{outtype}.gguf").unlink()
        (out / "floor.bin").unlink(missing_ok=True)
    emit(
        f"GGUF export before ({baseline}) and after (this checkout), alternating, best of {repeats}",
        [
            "outtype",
            "MB",
            "before s (best / median / worst)",
            "after s (best / median / worst)",
            "copy floor s (best / median / worst)",
            "before / floor",
            "after / floor",
            "peak RSS MiB before / after",
            "load average",
            "files",
        ],
        rows,
        [machine_line_light()],
    )


def _verify_results(folder: Path) -> dict:
    """verify.json's results without their timestamps (what must be equal before and after)."""
    import json

    results = json.loads((folder / "verify.json").read_text())["results"]
    return {name: {k: v for k, v in r.items() if k != "timestamp"} for name, r in results.items()}


def compare_verify_all(baseline: Path, repeats: int, hf_dir: Path, out: Path) -> None:
    """`export_gguf(hf_dir, "all", verify=True)` of the baseline and of this checkout in turn, `repeats` times."""
    here = Path(__file__).resolve().parent.parent
    runs: dict[str, list[float]] = {"before": [], "after": []}
    rss: dict[str, float] = {"before": 0.0, "after": 0.0}
    loads = []
    for _ in range(repeats):
        loads.append(os.getloadavg()[0])
        for label, root in (("before", baseline), ("after", here)):
            folder = out / label
            folder.mkdir(exist_ok=True)
            command = [sys.executable, "-c", OURS_ALL, str(hf_dir.resolve()), str(folder.resolve() / "m-{ftype}.gguf")]
            (folder / "verify.json").unlink(missing_ok=True)
            wall, peak, code, tail = run_child(command, {"PYTHONPATH": str(root)}, cwd=root)
            if code != 0:
                raise SystemExit(f"{label} --outtype all failed: {tail}")
            runs[label].append(wall)
            rss[label] = max(rss[label], peak)
    names = sorted(p.name for p in (out / "after").glob("*.gguf"))
    same = all(filecmp.cmp(out / "before" / n, out / "after" / n, shallow=False) for n in names)
    results_same = _verify_results(out / "before") == _verify_results(out / "after")
    best = {k: min(v) for k, v in runs.items()}
    row = [
        str(len(names)),
        *(f"{best[k]:.1f} / {statistics.median(runs[k]):.1f} / {max(runs[k]):.1f}" for k in runs),
        f"{best['before'] / best['after']:.2f}",
        f"{rss['before']:.0f} / {rss['after']:.0f}",
        f"{min(loads):.1f}-{max(loads):.1f}",
        "byte-identical" if same else "DIFFER",
        "equal" if results_same else "DIFFER",
    ]
    emit(
        f"gguf --outtype all with verify, before ({baseline}) and after (this checkout), alternating, best of {repeats}",
        [
            "GGUF files",
            "before s (best / median / worst)",
            "after s (best / median / worst)",
            "before / after",
            "peak RSS MiB before / after",
            "load average",
            "outputs",
            "verify results",
        ],
        [row],
        [machine_line_light()],
    )


def machine_line_light() -> str:
    """The CPU and core count, without importing torch (this parent's RSS would carry into children)."""
    from _shared import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores"


def find_sdist(workdir: Path, explicit: Path | None) -> Path | None:
    """The llama-cpp-python sdist: given, pip's download cache, or `pip download` (a registry package)."""
    if explicit is not None:
        return explicit
    for found in workdir.glob("llama_cpp_python-*.tar.gz"):
        return found
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", LLAMA_CPP_PYTHON, "-d"]
    subprocess.run([*cmd, str(workdir)], check=False, capture_output=True)
    return next(iter(workdir.glob("llama_cpp_python-*.tar.gz")), None)


def extract_converter(sdist: Path, workdir: Path) -> Path:
    """vendor/llama.cpp's convert_hf_to_gguf.py, conversion/ and gguf-py/ from the sdist."""
    root = workdir / "llama.cpp"
    if (root / "convert_hf_to_gguf.py").is_file():
        return root
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            _, _, rest = member.name.partition("/vendor/llama.cpp/")
            if rest and rest.startswith(wanted) and (member.isfile() or member.isdir()):
                member.name = rest
                tar.extract(member, root, filter="data")
    return root


def tensor_bytes(path: Path) -> dict[str, tuple[int, bytes]]:
    import gguf

    return {t.name: (int(t.tensor_type), bytes(t.data.tobytes())) for t in gguf.GGUFReader(path).tensors}


def compare(ours: Path, theirs: Path) -> str:
    a, b = tensor_bytes(ours), tensor_bytes(theirs)
    if set(a) != set(b):
        return f"tensor sets differ: {sorted(set(a) ^ set(b))[:3]}"
    differ = [name for name in a if a[name] != b[name]]
    return "bit-identical" if not differ else f"{len(differ)}/{len(a)} tensors differ (first {differ[0]})"


def setup(workdir: Path, arch: str = ARCH) -> None:
    """Child: the preset's checkpoint (random weights) and its float32 HF folder, cached in workdir."""
    from mythos_convert.api import export_hf
    from mythos_convert.quant import kquants
    from mythos_convert.support.ui import set_quiet

    set_quiet(True)
    ckpt = bench_checkpoint(workdir / "native", arch)
    if not (workdir / "hf" / "config.json").is_file():
        export_hf(ckpt, workdir / "hf", dtype="float32", verify=False, card=False, force=True)
    print(f"{machine(2)}; quantizers: {kquants.describe()}")  # builds the kernels outside the timings


def in_child(*args: str) -> str:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench_gguf {args[0]} failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="keep the checkpoint, HF folder and outputs here")
    parser.add_argument("--outtypes", default="f32,f16,bf16,q8_0,q4_0,q4_k_m,q5_k_m,q6_k")
    parser.add_argument("--sdist", type=Path, default=None, help="llama-cpp-python sdist (default: pip download)")
    parser.add_argument("--repeats", type=int, default=2, help="best of N runs per converter")
    parser.add_argument("--quick", action="store_true", help="f16 and q8_0 only, one run each")
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout: before/after, alternating")
    parser.add_argument("--verify-all", action="store_true", help="with --baseline: `--outtype all` with verify")
    parser.add_argument("--arch", default=ARCH, help="the preset whose architecture is exported (random weights)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)  # setup WORKDIR | compare OURS THEIRS
    args = parser.parse_args(argv)
    if args.quick:
        args.outtypes, args.repeats = "f16,q8_0,q4_k_m", 1
    if args.child:
        if args.child[0] == "setup":
            setup(Path(args.child[1]), args.child[2])
        else:
            print(compare(Path(args.child[1]), Path(args.child[2])))
        return
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mythos-bench-gguf-")))
        workdir.mkdir(parents=True, exist_ok=True)
        machine_line = in_child("--child", "setup", str(workdir), args.arch)
        hf_dir = workdir / "hf"
        source = hf_dir / "model.safetensors"
        out = workdir / "out"
        out.mkdir(exist_ok=True)
        if args.baseline is not None and args.verify_all:
            compare_verify_all(args.baseline, args.repeats, hf_dir, out)
            return
        if args.baseline is not None:
            compare_with_baseline(args.baseline, args.outtypes.split(","), args.repeats, hf_dir, out)
            return

        notes = [machine_line, f"source: {hf_dir} (float32 safetensors, {source.stat().st_size / 1e6:.0f} MB)"]
        sdist = find_sdist(workdir, args.sdist)
        converter = extract_converter(sdist, workdir) if sdist is not None else None
        if converter is None:
            notes.append("llama.cpp's converter: the llama-cpp-python sdist could not be obtained")
        else:
            plain = [sys.executable, str(converter / "convert_hf_to_gguf.py"), str(hf_dir), "--outtype", "f16"]
            _, _, code, tail = run_child([*plain, "--outfile", str(out / "refused.gguf")])
            notes.append(f"llama.cpp's converter unpatched: exit {code}: {tail[-160:]}")
            patched = [sys.executable, "-c", LLAMA_PATCHED, str(converter), str(hf_dir), "--outtype", "f16"]
            _, _, code, tail = run_child([*patched, "--keep-pre-check", "--outfile", str(out / "refused.gguf")])
            notes.append(f"... with sentencepiece installed (probe patched): exit {code}: {tail[-160:]}")
            notes.append("llama.cpp rows: pre-tokenizer check and sentencepiece probe patched out (benchmark only)")

        rows = []
        f32_gguf = out / "source-F32.gguf"  # llama.cpp's quantizer's input, written outside the timings
        if any(t in K_QUANTS for t in args.outtypes.split(",")):
            run_child([sys.executable, "-c", OURS, str(hf_dir), "f32", str(f32_gguf)])
        for outtype in args.outtypes.split(","):
            ours_path = out / f"ours-{outtype}.gguf"
            ours = [sys.executable, "-c", OURS, str(hf_dir), outtype, str(ours_path)]
            wall, rss, code, tail = best_of(args.repeats, ours)
            if code != 0:
                raise SystemExit(f"mythos-convert gguf --outtype {outtype} failed: {tail}")
            size = ours_path.stat().st_size
            floor = [sys.executable, "-c", FLOOR, str(source), str(out / "floor.bin"), str(size)]
            floor_wall, *_ = best_of(args.repeats, floor)
            row = [outtype, f"{size / 1e6:.0f}", wall, rss, floor_wall, wall / floor_wall]
            if outtype in K_QUANTS:
                import gguf  # light (numpy): the parent must not import torch, its RSS would carry into children

                theirs = out / f"llama-{outtype}.gguf"
                ftype = str(int(gguf.LlamaFileType[f"MOSTLY_{outtype.upper()}"]))
                quantize = [sys.executable, "-c", LLAMA_QUANTIZE, str(f32_gguf), str(theirs), ftype]
                lwall, lrss, lcode, ltail = best_of(args.repeats, [*quantize, "1"])
                lwall2, *_ = best_of(args.repeats, [*quantize, "2"])
                wall1, *_ = best_of(args.repeats, ours, {"MYTHOS_QUANT_WORKERS": "1"})
                wall2, *_ = best_of(args.repeats, ours, {"MYTHOS_QUANT_WORKERS": "2"})
                if lcode != 0:
                    row += ["failed", "-", ltail[-80:]]
                else:
                    same = in_child("--child", "compare", str(ours_path), str(theirs))
                    ratios = f"ours {wall1:.2f} / {wall2:.2f}: {wall1 / lwall:.2f}x / {wall2 / lwall2:.2f}x"
                    row += [f"{lwall:.2f} / {lwall2:.2f} ({ratios})", lrss, same]
                    theirs.unlink()
            elif converter is not None and outtype in LLAMA_CPP_TYPES:
                theirs = out / f"llama-{outtype}.gguf"
                cmd = [sys.executable, "-c", LLAMA_PATCHED, str(converter), str(hf_dir), "--outtype", outtype]
                lwall, lrss, lcode, ltail = best_of(args.repeats, [*cmd, "--outfile", str(theirs)])
                if lcode != 0:
                    row += ["failed", "-", ltail[-80:]]
                else:
                    row += [lwall, lrss, in_child("--child", "compare", str(ours_path), str(theirs))]
                    theirs.unlink()
            else:
                row += ["-", "-", "n/a (llama.cpp's converter has no numpy " + outtype + ")"]
            rows.append(row)
            ours_path.unlink()
            (out / "floor.bin").unlink(missing_ok=True)
        emit(
            "GGUF export, mythos-172m (random weights), from the HF folder",
            [
                "outtype",
                "MB",
                "ours s",
                "ours peak RSS MiB",
                "copy floor s",
                "ours / floor",
                "llama.cpp s (K-quants: 1 / 2 threads; ours at 1 / 2 workers, ratio)",
                "llama.cpp peak RSS MiB",
                "tensor data vs llama.cpp",
            ],
            rows,
            notes,
        )


if __name__ == "__main__":
    main()
