"""Score any shapes pipeline with the classifier a built-in-default run trained (`--mode default`), as the recipe
scores its own checkpoints: class-balanced samples (euler) without guidance and with CFG 3, their class accuracy
(overall and per class) and classifier Frechet distance to the pipeline's own reconstructions of the run's held-out
images.

    python -m examples.toy.score_pipeline --output_dir outputs/toy-default --pipeline dc_ae_hf/assets/toy-dcae15-shapes

Use it to compare pipelines that were trained or scored apart (e.g. the previously bundled default against the new
one) with one judge. It needs `<output_dir>/eval/classifier` (saved by the recipe's evaluation) and
`<output_dir>/data/heldout`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dc_ae_hf.checks import check_int, exit_on_user_error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.toy.score_pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", required=True, help="a `--mode default` run (its classifier and data)")
    parser.add_argument("--pipeline", required=True, help="the pipeline folder to score")
    parser.add_argument("--num_samples", type=int, default=500, help="class-balanced samples per guidance scale")
    parser.add_argument("--sample_steps", type=int, default=20, help="euler steps")
    parser.add_argument("--seed", type=int, default=1000, help="sampling seed (the recipe uses 1000 + run seed)")
    parser.add_argument("--output_json", help="also write the rows here")
    args = parser.parse_args(argv)
    try:
        check_int("--num_samples", args.num_samples, minimum=1)
        check_int("--sample_steps", args.sample_steps, minimum=1)
        check_int("--seed", args.seed, minimum=0)
    except ValueError as error:
        parser.error(str(error))
    out = Path(args.output_dir)
    for needed in (out / "eval" / "classifier" / "config.json", out / "data" / "heldout" / "train"):
        if not needed.exists():
            parser.error(f"--output_dir {out} has no {needed.relative_to(out)}: run --mode default there first")
    if not (Path(args.pipeline) / "model_index.json").is_file():
        parser.error(f"--pipeline {args.pipeline} is not a pipeline folder (no model_index.json)")
    if args.output_json and not Path(args.output_json).resolve().parent.is_dir():
        parser.error(f"--output_json {args.output_json}: its folder does not exist")
    return args


if __name__ == "__main__":  # the flags first: --help and argument errors answer before the heavy imports
    parse_args()  # (main below parses them again, in a millisecond)

from dc_ae_hf.metrics.classifier import SmallImageClassifier
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline
from examples.toy.toy_evaluation import load_imagefolder, reconstruct, score_samples
from examples.toy.toy_settings import EVAL_GUIDANCE_SCALES


def main(argv: list[str] | None = None) -> list[dict]:
    """Score `--pipeline` (`run`). A user error (e.g. a pipeline or classifier folder that does not load) prints one
    line `error: ...` on stderr and exits with status 2 (`DC_AE_HF_TRACEBACK=1` keeps the traceback)."""
    return exit_on_user_error(run, parse_args(argv))


def run(args: argparse.Namespace) -> list[dict]:
    """Score `--pipeline`; returns one row per guidance scale: ``{"pipeline", "guidance_scale", "num_samples",
    "sample_steps", "class_accuracy", "classifier_fd", "class_accuracy_per_class"}`` (the last by class name)."""
    out = Path(args.output_dir)
    classifier = SmallImageClassifier.from_pretrained(out / "eval" / "classifier").eval()
    pipe = DCAE15Pipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    heldout, _ = load_imagefolder(out / "data" / "heldout")
    reference = reconstruct(pipe.vae, heldout)  # the pipeline's own autoencoder, as the recipe's references
    rows = []
    for scale in EVAL_GUIDANCE_SCALES:
        metrics = score_samples(
            pipe, classifier, reference, args.num_samples, args.sample_steps, args.seed, scale, per_class=True
        )
        row = {
            "pipeline": str(args.pipeline),
            "guidance_scale": scale,
            "num_samples": args.num_samples,
            "sample_steps": args.sample_steps,
            **metrics,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
