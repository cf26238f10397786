"""Score any shapes pipeline with the classifier a built-in-default run trained (`--mode default`), as the recipe
scores its own checkpoints: class-balanced samples (euler) without guidance and with CFG 3, their class accuracy
(overall and per class) and classifier Frechet distance to the pipeline's own reconstructions of the run's held-out
images.

    python -m examples.toy.score_pipeline --output_dir outputs/toy-default --pipeline dc_ae_hf/assets/toy-dcae15-shapes

Use it to compare pipelines that were trained or scored apart (e.g. the previously bundled default against the new
one) with one judge. It needs `<output_dir>/eval/classifier` (saved by the recipe's evaluation) and
`<output_dir>/data/heldout`.

`--judge real_images` scores with a second judge instead, as a check that the number is not the recipe classifier's
alone: another `SmallImageClassifier` (width 48, not 32; seed `--judge_seed`) trained on the run's real training
images, not on their reconstructions. It is trained on first use (`--judge_steps`, needs `<output_dir>/data/train`)
and kept in `<output_dir>/eval/judge_real_images_seed<N>`, so later calls use the same one.

    python -m examples.toy.score_pipeline --output_dir outputs/toy-default --pipeline dc_ae_hf/assets/toy-dcae15-shapes \
        --judge real_images
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dc_ae_hf.checks import check_int, exit_on_user_error

JUDGES = ("recipe", "real_images")
JUDGE_WIDTH = 48  # the second judge's width: not the recipe classifier's 32


def judge_folder(args: argparse.Namespace) -> Path:
    """Where the classifier of `--judge` is kept."""
    if args.judge == "recipe":
        return Path(args.output_dir) / "eval" / "classifier"
    return Path(args.output_dir) / "eval" / f"judge_real_images_seed{args.judge_seed}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.toy.score_pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", required=True, help="a `--mode default` run (its classifier and data)")
    parser.add_argument("--pipeline", required=True, help="the pipeline folder to score")
    parser.add_argument("--num_samples", type=int, default=500, help="class-balanced samples per guidance scale")
    parser.add_argument("--sample_steps", type=int, default=20, help="euler steps")
    parser.add_argument("--seed", type=int, default=1000, help="sampling seed (the recipe uses 1000 + run seed)")
    parser.add_argument("--output_json", help="also write the rows here")
    parser.add_argument(
        "--judge",
        choices=JUDGES,
        default="recipe",
        help="recipe: the classifier that scored the run; real_images: a second one, trained on the real training "
        "images (once, then kept in <output_dir>/eval/judge_real_images_seed<N>)",
    )
    parser.add_argument("--judge_seed", type=int, default=1, help="--judge real_images: its training seed")
    parser.add_argument("--judge_steps", type=int, default=4000, help="--judge real_images: its training steps")
    args = parser.parse_args(argv)
    try:
        check_int("--num_samples", args.num_samples, minimum=1)
        check_int("--sample_steps", args.sample_steps, minimum=1)
        check_int("--seed", args.seed, minimum=0)
        check_int("--judge_seed", args.judge_seed, minimum=0)
        check_int("--judge_steps", args.judge_steps, minimum=1)
    except ValueError as error:
        parser.error(str(error))
    out = Path(args.output_dir)
    needs = [out / "eval" / "classifier" / "config.json", out / "data" / "heldout" / "train"]
    if args.judge == "real_images" and not (judge_folder(args) / "info.json").is_file():
        needs.append(out / "data" / "train" / "train")  # to train it
    for needed in needs:
        if not needed.exists():
            parser.error(f"--output_dir {out} has no {needed.relative_to(out)}: run --mode default there first")
    if not (Path(args.pipeline) / "model_index.json").is_file():
        parser.error(f"--pipeline {args.pipeline} is not a pipeline folder (no model_index.json)")
    if args.output_json and not Path(args.output_json).resolve().parent.is_dir():
        parser.error(f"--output_json {args.output_json}: its folder does not exist")
    return args


if __name__ == "__main__":  # the flags first: --help and argument errors answer before the heavy imports
    parse_args()  # (main below parses them again, in a millisecond)

import torch

from dc_ae_hf.data.shapes import SHAPE_CLASSES
from dc_ae_hf.metrics.classifier import SmallImageClassifier, classifier_outputs, train_classifier
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline
from examples.toy.toy_evaluation import load_imagefolder, reconstruct, saved_classifier, score_samples
from examples.toy.toy_settings import EVAL_GUIDANCE_SCALES


def main(argv: list[str] | None = None) -> list[dict]:
    """Score `--pipeline` (`run`). A user error (e.g. a pipeline or classifier folder that does not load) prints one
    line `error: ...` on stderr and exits with status 2 (`DC_AE_HF_TRACEBACK=1` keeps the traceback)."""
    return exit_on_user_error(run, parse_args(argv))


def run(args: argparse.Namespace) -> list[dict]:
    """Score `--pipeline` with the classifier of `--judge`; returns one row per guidance scale: ``{"pipeline",
    "guidance_scale", "num_samples", "sample_steps", "judge", "class_accuracy", "classifier_fd",
    "class_accuracy_per_class"}`` (the last by class name), with "judge_heldout_accuracy" for the second judge."""
    out = Path(args.output_dir)
    heldout, heldout_labels = load_imagefolder(out / "data" / "heldout")
    if args.judge == "recipe":
        classifier = SmallImageClassifier.from_pretrained(judge_folder(args)).eval()
        judge = {"judge": "recipe"}
    else:
        classifier, info = saved_classifier(
            judge_folder(args), lambda: train_real_images_judge(args, heldout, heldout_labels)
        )
        if info["steps"] != args.judge_steps:
            raise ValueError(
                f"--judge_steps={args.judge_steps} is not allowed: the judge kept in {judge_folder(args)} was trained "
                f"for {info['steps']} steps; pass --judge_steps {info['steps']}, or another --judge_seed"
            )
        judge = {"judge": f"real_images seed {args.judge_seed}", "judge_heldout_accuracy": info["heldout_accuracy"]}
    pipe = DCAE15Pipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
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
            **judge,
            **metrics,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def train_real_images_judge(args: argparse.Namespace, heldout: torch.Tensor, heldout_labels: torch.Tensor) -> tuple:
    """The second judge: a width-48 `SmallImageClassifier` trained with seed `--judge_seed` for `--judge_steps` on
    the run's real training images (not reconstructions). Returns (classifier, None, info) as `saved_classifier`
    wants it; info holds its accuracy on the real held-out images `heldout` (labels `heldout_labels`)."""
    out = Path(args.output_dir)
    images, labels = load_imagefolder(out / "data" / "train")
    classifier = train_classifier(
        images, labels, len(SHAPE_CLASSES), steps=args.judge_steps, seed=args.judge_seed, width=JUDGE_WIDTH
    )
    logits, _ = classifier_outputs(classifier, heldout)
    accuracy = (logits.argmax(1) == heldout_labels).float().mean().item()
    print(f"judge real_images seed {args.judge_seed}: held-out accuracy {accuracy:.3f}", flush=True)
    info = {
        "trained_on": "real training images",
        "seed": args.judge_seed,
        "width": JUDGE_WIDTH,
        "steps": args.judge_steps,
        "heldout_accuracy": accuracy,
    }
    return classifier, None, info


if __name__ == "__main__":
    main()
