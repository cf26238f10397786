"""DC-AE 1.5 demo: sample a class-conditional pipeline, and see the structured latent space at work.

    python app/app.py                                  # the bundled toy pipeline, offline, http://127.0.0.1:7860
    python app/app.py --model path/to/pipeline         # any DCAE15Pipeline folder or Hub id
    DC_AE_HF_APP_MODEL=<folder or Hub id> python app/app.py

Two tabs:
- **Sample**: classes by name (with completion) or id, guidance scale and interval, sampler and steps, the number of
  latent channels to sample in (any trained prefix c' of the autoencoder), a seed; the grid, with a progress bar.
- **Reconstruct**: an uploaded or built-in image, a slider over the autoencoder's trained prefixes c'; the
  reconstruction from the first c' channels next to the input, and the paper's pictures of the latent: the
  channel-wise mean (Fig. 2) and every channel (Fig. 9/10).

Bad input (a class that does not exist, an image too small or not an image at all, a seed out of range) is a message
in the page, never a stack trace; a bad command line (a model that does not load, a port in use) is one line
`error: ...` on stderr and exit status 2.

Without dc_ae_hf (a Space folder made by `make space`) the app loads the pipeline with plain diffusers
(`DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`: a self-contained folder, such as the toy pipeline
next to it) and takes its picture helpers from `app_helpers.py`, which `make space` generates from dc_ae_hf.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if (HERE.parent / "dc_ae_hf").is_dir():  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))

MODEL_ENV = "DC_AE_HF_APP_MODEL"


def _port(text: str) -> int:
    """argparse type of --port: a whole number in 1..65535."""
    if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a whole number in 1..65535")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help=f"pipeline folder or Hub id (default: ${MODEL_ENV}, else the bundled toy)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=_port, default=os.environ.get("GRADIO_SERVER_PORT", "7860"), help="1..65535")
    return parser


if __name__ == "__main__":  # the flags first: --help and argument errors answer before gradio and torch are imported
    build_parser().parse_args()  # (main below parses them again, in a millisecond)

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402
from torchvision.transforms.functional import center_crop, pil_to_tensor, resize  # noqa: E402

try:
    import dc_ae_hf
except ImportError:  # a Space folder made by `make space`: plain diffusers and the generated helpers
    dc_ae_hf = None
    from app_helpers import latent_channels_picture, latent_mean_picture, tile, to_pil, to_rgb
    from diffusers import DiffusionPipeline
else:
    from dc_ae_hf import DCAE15Pipeline
    from dc_ae_hf.data.images import to_rgb
    from dc_ae_hf.visualization import latent_channels_picture, latent_mean_picture, tile, to_pil

# The toy pipeline: next to the app in a Space folder, else the one shipped with the package.
BUNDLED_MODEL = HERE / "toy-dcae15-shapes"
if not BUNDLED_MODEL.is_dir() and dc_ae_hf is not None:
    BUNDLED_MODEL = Path(dc_ae_hf.__file__).parent / "assets" / "toy-dcae15-shapes"
EXAMPLES = sorted((HERE / "examples").glob("*.png"))
SOLVERS = {
    "the pipeline's scheduler (default: UniPC, 24 steps at dopri5's accuracy)": None,
    "euler (official)": "euler",
    "heun2 (official)": "heun2",
    "dopri5 (official, adaptive)": "dopri5",
}
MAX_IMAGES = 16
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes 0..2**64-1; Gradio's number box keeps 2**53 exactly
USAGE_ERROR_STATUS = 2  # as argparse and every dc_ae_hf entry point


def load_pipeline(model: str):
    """`DCAE15Pipeline.from_pretrained` with dc_ae_hf; without it, plain diffusers' remote-code loading, which needs a
    self-contained folder (`save_pretrained(..., self_contained=True)`)."""
    if dc_ae_hf is not None:
        return DCAE15Pipeline.from_pretrained(model)
    try:
        return DiffusionPipeline.from_pretrained(model, trust_remote_code=True)
    except (ValueError, OSError) as error:
        raise ValueError(
            f"{model!r} does not load with plain diffusers ({type(error).__name__}: {error}); without dc_ae_hf the "
            "app needs a self-contained pipeline folder: save it with save_pretrained(..., self_contained=True)"
        ) from error


class Demo:
    """The app's logic, independent of Gradio: one pipeline, its classes and its trained channel prefixes."""

    def __init__(self, model: str | os.PathLike | None = None, device: str | None = None) -> None:
        self.model = str(model or os.environ.get(MODEL_ENV) or BUNDLED_MODEL)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.pipe = load_pipeline(self.model).to(self.device)
        self.pipe.set_progress_bar_config(desc="sampling")
        vae, transformer = self.pipe.vae, self.pipe.transformer
        self.latent_channels = vae.config.latent_channels
        self.prefixes = list(getattr(vae, "latent_channel_choices", None) or [self.latent_channels])
        self.resolution = transformer.config.sample_size * vae.spatial_compression_ratio
        id2label = {int(k): v for k, v in (self.pipe.config.id2label or {}).items()}
        self.classes = [f"{id2label[i].split(',')[0]} ({i})" for i in sorted(id2label)]
        self.num_classes = transformer.config.num_classes
        self.guided = transformer.config.class_dropout_prob > 0
        bundled = Path(self.model).resolve() == BUNDLED_MODEL.resolve()
        self.display_name = "the bundled toy pipeline (shapes, 32 px)" if bundled else f"`{self.model}`"

    # ---- sample ------------------------------------------------------------------------------------------------

    def parse_classes(self, selected: list[str] | str | None) -> list[int | str]:
        """Class choices as the pipeline takes them: "name (id)" from the list -> id, a bare id -> int, anything
        else -> a name the pipeline looks up (ValueError naming close matches when it does not exist)."""
        if isinstance(selected, str):
            selected = selected.replace(";", ",").split(",")
        labels = []
        for entry in selected or []:
            entry = str(entry).strip()
            if not entry:
                continue
            if entry.endswith(")") and "(" in entry and entry[entry.rindex("(") + 1 : -1].isdigit():
                entry = entry[entry.rindex("(") + 1 : -1]
            labels.append(int(entry) if entry.isdigit() else entry)
        if not labels:
            raise ValueError("choose at least one class (a name from the list or a class id)")
        if len(labels) > MAX_IMAGES:
            raise ValueError(f"at most {MAX_IMAGES} classes per grid, got {len(labels)}")
        bad = [y for y in labels if isinstance(y, int) and not 0 <= y < self.num_classes]
        if bad:
            raise ValueError(f"class ids {bad} do not exist: this model has classes 0..{self.num_classes - 1}")
        for name in (y for y in labels if isinstance(y, str)):
            try:
                self.pipe.get_label_ids(name)  # the pipeline's own lookup (names, synonyms, any case)
            except ValueError:
                examples = ", ".join(c.rsplit(" (", 1)[0] for c in self.classes[:5])
                raise ValueError(
                    f"there is no class {name!r} in this model; pick one from the list (e.g. {examples}) or give a "
                    f"class id in 0..{self.num_classes - 1}"
                ) from None
        return labels

    def sample(
        self,
        classes,
        guidance_scale: float = 1.0,
        interval: tuple[float, float] = (0.0, 1.0),
        solver: str = next(iter(SOLVERS)),
        steps: int = 24,
        latent_channels: int | None = None,
        seed: int = 0,
    ) -> Image.Image:
        """A grid of one sample per chosen class."""
        labels = self.parse_classes(classes)
        if solver not in SOLVERS:
            raise ValueError(f"unknown sampler {solver!r}; choose one of {list(SOLVERS)}")
        low, high = (float(v) for v in interval)
        if not 0 <= low < high <= 1:
            raise ValueError(f"the guidance interval must satisfy 0 <= start < end <= 1, got ({low}, {high})")
        if guidance_scale != 1 and not self.guided:
            raise ValueError("this model was trained without label dropout: only guidance scale 1 is available")
        generator = torch.Generator(self.device).manual_seed(check_seed(seed))
        images = self.pipe(
            labels,
            guidance_scale=float(guidance_scale),
            guidance_interval=None if (low, high) == (0.0, 1.0) else (low, high),
            num_inference_steps=int(steps),
            solver=SOLVERS[solver],
            latent_channels=int(latent_channels or self.latent_channels),
            generator=generator,
        ).images
        cell = max(images[0].width, 128)
        images = [image.resize((cell, cell), Image.NEAREST) for image in images]
        columns = min(len(images), 4)
        return tile([images[i : i + columns] for i in range(0, len(images), columns)])

    # ---- reconstruct -------------------------------------------------------------------------------------------

    def nearest_prefix(self, value: float) -> int:
        """The trained prefix closest to a slider value."""
        return min(self.prefixes, key=lambda c: (abs(c - float(value)), c))

    def prepare_image(self, image: Image.Image | None) -> torch.Tensor:
        """The image as the autoencoder sees it: RGB, shorter side resized to the model's resolution, center
        cropped; (1, 3, R, R) in [-1, 1]. ValueError for no image or one smaller than the resolution."""
        if image is None:
            raise ValueError("upload an image or pick one of the examples")
        image = to_rgb(image)
        if min(image.size) < self.resolution:
            raise ValueError(
                f"the image is {image.width}x{image.height} px; this autoencoder works at {self.resolution} px: "
                f"give one whose shorter side is at least {self.resolution} px"
            )
        picture = center_crop(resize(image, self.resolution), self.resolution)
        return (pil_to_tensor(picture).float() / 127.5 - 1).unsqueeze(0)

    @torch.no_grad()
    def reconstruct(self, image: Image.Image | None, channels: float) -> tuple[Image.Image, ...]:
        """(input, reconstruction from the first c' channels, channel-wise mean, every channel), and c'."""
        x = self.prepare_image(image).to(self.device)
        c = self.nearest_prefix(channels)
        vae = self.pipe.vae
        latent = vae.encode(x.to(vae.dtype)).latent  # (1, C, h, w)
        reconstruction = vae.decode(latent[:, :c]).sample  # (1, 3, R, R): decoded from the first c' channels
        cell = max(self.resolution, 192)
        channel_cell = max(cell // 4, 8 * math.ceil(32 / latent.shape[-1]))
        return (
            to_pil(x[0], cell),
            to_pil(reconstruction[0].clamp(-1, 1), cell),
            latent_mean_picture(x, latent, cell),
            latent_channels_picture(latent[0], channel_cell, per_row=8),
            c,
        )


def check_seed(seed) -> int:
    """The seed as an int; ValueError unless it is a whole number in 0..MAX_SEED (a cleared box gives None)."""
    try:
        whole = not isinstance(seed, bool) and float(seed).is_integer()
    except (TypeError, ValueError):
        whole = False
    if not whole or not 0 <= int(float(seed)) <= MAX_SEED:
        raise ValueError(f"the seed must be a whole number in 0..{MAX_SEED}, got {seed!r}")
    return int(float(seed))


def image_input(**kwargs) -> gr.Image:
    """A `gr.Image` whose upload of a file that is not a readable image is a message in the page; plain `gr.Image`
    fails inside its own preprocessing with a bare "Error". The instance's `preprocess` is wrapped, because a
    subclass would make Gradio write a `.pyi` stub next to this file."""
    component = gr.Image(**kwargs)
    preprocess = component.preprocess

    def readable(payload):
        try:
            return preprocess(payload)
        except (UnidentifiedImageError, OSError) as error:
            name = getattr(payload, "orig_name", None) or "the uploaded file"
            raise gr.Error(
                f"{name} is not an image this app can read ({type(error).__name__}); upload a PNG, JPEG or WebP image"
            ) from None

    component.preprocess = readable
    return component


def _shown(function):
    """Run an app callback; a ValueError becomes a message in the page (gr.Error), not a stack trace."""

    def wrapped(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ValueError as error:
            raise gr.Error(str(error)) from None

    wrapped.__name__ = function.__name__
    return wrapped


def build_app(demo: Demo) -> gr.Blocks:
    """The Gradio page over `demo`."""
    prefixes = demo.prefixes
    step = math.gcd(*[b - a for a, b in zip(prefixes, prefixes[1:])]) if len(prefixes) > 1 else 1
    with gr.Blocks(title="DC-AE 1.5: a structured latent space") as app:
        gr.Markdown(
            "# DC-AE 1.5: a structured latent space\n"
            f"Model: {demo.display_name} ({demo.latent_channels} latent channels, trained prefixes c' = "
            f"{', '.join(map(str, prefixes))}). The autoencoder reconstructs from any prefix of its latent channels: "
            "the first ones hold the object's structure, later ones the detail (arXiv 2508.00413)."
        )
        with gr.Tab("Sample"):
            with gr.Row():
                with gr.Column():
                    classes = gr.Dropdown(
                        demo.classes,
                        value=demo.classes[:4] or None,
                        multiselect=True,
                        allow_custom_value=True,
                        label="Classes (names from the list, or class ids)",
                    )
                    guidance = gr.Slider(1.0, 10.0, value=3.0 if demo.guided else 1.0, step=0.1, label="Guidance")
                    with gr.Row():
                        start = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="Guidance from t")
                        end = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="to t")
                    solver = gr.Dropdown(list(SOLVERS), value=next(iter(SOLVERS)), label="Sampler")
                    steps = gr.Slider(1, 250, value=24, step=1, label="Steps (not used by dopri5)")
                    channels = gr.Dropdown(prefixes, value=prefixes[-1], label="Latent channels to sample in (c')")
                    seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                    sample_button = gr.Button("Sample", variant="primary")
                samples = gr.Image(type="pil", label="Samples", elem_id="samples")

            def sample(
                classes, guidance, start, end, solver, steps, channels, seed, progress=gr.Progress(track_tqdm=True)
            ):  # the pipeline's tqdm bar is shown as the page's progress bar
                return demo.sample(classes, guidance, (start, end), solver, steps, channels, seed)

            sample_button.click(
                _shown(sample), [classes, guidance, start, end, solver, steps, channels, seed], samples
            )
        with gr.Tab("Reconstruct"):
            with gr.Row():
                with gr.Column():
                    image = image_input(type="pil", label="Input image", elem_id="input")
                    if EXAMPLES:
                        gr.Examples([[str(p)] for p in EXAMPLES], inputs=[image], label="Built-in images")
                    prefix = gr.Slider(
                        prefixes[0],
                        prefixes[-1],
                        value=prefixes[-1],
                        step=step,
                        label="Latent channels c'",
                        elem_id="prefix",
                    )
                    used = gr.Number(label="c' used (the nearest trained prefix)", interactive=False)
                with gr.Column():
                    with gr.Row():
                        shown = gr.Image(type="pil", label="Input (as encoded)")
                        reconstruction = gr.Image(type="pil", label="Reconstruction", elem_id="reconstruction")
                    mean = gr.Image(type="pil", label="Image and channel-wise latent mean (Fig. 2)")
                    every = gr.Image(type="pil", label="Every latent channel (Fig. 9/10)")
            outputs = [shown, reconstruction, mean, every, used]
            prefix.change(_shown(demo.reconstruct), [image, prefix], outputs, trigger_mode="always_last")

            def reconstruct_new_image(image, c):
                return (None,) * len(outputs) if image is None else demo.reconstruct(image, c)

            image.change(_shown(reconstruct_new_image), [image, prefix], outputs)
    return app


def _exit_with_error(message) -> None:
    """One line `error: ...` on stderr and status 2 (dc_ae_hf's `exit_with_error`, written out here because a Space
    folder runs without dc_ae_hf)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(USAGE_ERROR_STATUS) from None


def main(argv: list[str] | None = None) -> None:
    """Serve the app. A model that does not load or a port in use is one line `error: ...` and exit status 2."""
    args = build_parser().parse_args(argv)
    _check_free(args.host, args.port)  # before the model loads: a busy port is known at once
    try:
        app = build_app(Demo(args.model))
    except (ValueError, TypeError, OSError) as error:
        _exit_with_error(f"the app's model (--model / ${MODEL_ENV}) does not load: {error}")
    try:
        app.queue().launch(server_name=args.host, server_port=args.port, show_error=False)
    except OSError:  # taken since the check above (Gradio: "Cannot find empty port in range: ...")
        _check_free(args.host, args.port)
        raise


def _check_free(host: str, port: int) -> None:
    """Exit with one line naming --port / --host unless `host:port` can be served on."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            busy = error.errno == errno.EADDRINUSE
            _exit_with_error(
                f"port {port} on {host} is in use: pass a free one with --port N"
                if busy
                else f"cannot serve on {host}:{port} ({error.strerror}): pass another address with --host or --port"
            )


if __name__ == "__main__":
    main()
