"""How fast every entry point answers `--help` and an argument error, against `python -c "import torch"`.

Each entry point reads its flags from torch-free modules and imports torch, diffusers and the rest only after them,
so `--help` and an argument-syntax error should take well under half the time of importing torch. Each command is
timed as a whole subprocess (interpreter start included), in interleaved rounds with `import torch` (the order
alternates every round: `benchmarks.timing.interleaved`); the table gives the median seconds of each and the median
of the per-round ratios to `import torch`. The load average is printed at the start and the end: times from a
loaded machine are not a claim.

    python benchmarks/bench_cli_startup.py                        # every entry point, 5 rounds
    python benchmarks/bench_cli_startup.py --rounds 10 --only convert app
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from timing import interleaved, load_average, median_ratio

REPO_ROOT = Path(__file__).resolve().parents[1]
# Each entry point: the command after the interpreter, and flags that argparse refuses (an argument-syntax error).
ENTRY_POINTS: dict[str, tuple[list[str], list[str]]] = {
    "train_dc_ae.py": (["training/train_dc_ae.py"], ["--phase", "7"]),
    "train_usit.py": (["training/train_usit.py"], ["--validation_solver", "rk4"]),
    "cache_latents.py": (["training/cache_latents.py"], ["--latent_dtype", "fp8"]),
    "evaluate_dc_ae.py": (["training/evaluate_dc_ae.py"], ["--vae_dtype", "fp8"]),
    "evaluate_usit.py": (["training/evaluate_usit.py"], ["--solver", "rk4"]),
    "make_reference_statistics.py": (["training/make_reference_statistics.py"], ["--fid_feature_layer", "99"]),
    "convert": (["-m", "dc_ae_hf.convert"], ["autoencoder", "--dtype", "fp8"]),
    "sample.py": (["examples/sample.py"], ["--solver", "rk4"]),
    "visualize_latents.py": (["examples/visualize_latents.py"], ["--resolution", "x"]),
    "app.py": (["app/app.py"], ["--port", "0"]),
    "toy run_recipe": (["-m", "examples.toy.run_recipe"], ["--mode", "none"]),
    "toy score_pipeline": (["-m", "examples.toy.score_pipeline"], ["--num_samples", "x"]),
    "toy pilot_regime": (["-m", "examples.toy.pilot_regime"], ["--arms", "none"]),
    "toy measure_regime": (["-m", "examples.toy.measure_regime"], ["--mode", "none"]),
    "toy measure_sweep": (["-m", "examples.toy.measure_sweep"], ["--mode", "none"]),
    "toy pilot_default": (["-m", "examples.toy.pilot_default"], ["--variants", "none"]),
}
IMPORT_TORCH = ["-c", "import torch"]


def command(arguments: list[str], expected_status: int):
    """A call that runs `python <arguments>` in the repository and checks its exit status."""

    def call() -> None:
        result = subprocess.run([sys.executable, *arguments], cwd=REPO_ROOT, capture_output=True, text=True)
        if result.returncode != expected_status:
            raise RuntimeError(f"{arguments} exited with {result.returncode}, not {expected_status}:\n{result.stderr}")

    return call


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per entry point (default 5)")
    p.add_argument("--only", nargs="*", default=None, help="only the entry points whose name contains one of these")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    print(f"start: {load_average()}")
    names = [n for n in ENTRY_POINTS if not args.only or any(part in n for part in args.only)]
    rows = []
    for name in names:
        entry, error = ENTRY_POINTS[name]
        candidates = {
            "import torch": command(IMPORT_TORCH, 0),
            "--help": command([*entry, "--help"], 0),
            "error": command([*entry, *error], 2),
        }
        times = interleaved(candidates, args.rounds)
        torch_seconds = statistics.median(times["import torch"])
        for case in ("--help", "error"):
            ratio = median_ratio(times, case, "import torch")
            rows.append((name, case, statistics.median(times[case]), torch_seconds, ratio))
    print("\n| entry point | case | median s | `import torch` median s | ratio to `import torch` |")
    print("|---|---|---|---|---|")
    for name, case, seconds, torch_seconds, ratio in rows:
        print(f"| {name} | {case} | {seconds:.3f} | {torch_seconds:.3f} | {ratio:.2f} |")
    print(f"\nend: {load_average()}")


if __name__ == "__main__":
    main()
