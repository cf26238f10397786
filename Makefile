# dc_ae_hf developer commands. `make demo` and `make test` are the README's two commands:
# each creates/updates the virtual environment in .venv by itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The build machine caps torch at these versions (the only CPU-capable builds on its package mirror);
# elsewhere override with `make test TORCH_SPEC=torch` to get a normal torch.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
DEMO_ARGS ?=

export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo app space browser test smoke-base smoke-plain lint style quality bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.py $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[test,dev]"
	touch $@

venv: $(VENV)/.installed

# The built-in default: the toy pipeline shipped in dc_ae_hf/assets (trained by examples/toy/run_recipe.py).
# The same command samples a real model: `make demo DEMO_MODEL=<Hub id or converted pipeline folder>` (ImageNet
# classes, the official dopri5 sampler, latent pictures at 512 px); override DEMO_CLASSES / DEMO_SAMPLER as needed.
TOY_PIPELINE := dc_ae_hf/assets/toy-dcae15-shapes
DEMO_MODEL ?= $(TOY_PIPELINE)
ifeq ($(DEMO_MODEL),$(TOY_PIPELINE))
export HF_HUB_OFFLINE ?= 1
DEMO_CLASSES ?= arrow circle crescent cross heart hexagon ring square star triangle
DEMO_SAMPLER ?= --solver euler --num_inference_steps 20 --guidance_scale 3 --upscale 4 --num_images_per_class 8
DEMO_RESOLUTION ?= 32
else
DEMO_CLASSES ?= 207 360 387 974 88 979 417 279
DEMO_SAMPLER ?= --solver dopri5 --guidance_scale 1.5
DEMO_RESOLUTION ?= 512
endif
demo: venv
	$(BIN)/python examples/sample.py --model $(DEMO_MODEL) $(DEMO_SAMPLER) --class_labels $(DEMO_CLASSES) \
		--output outputs/demo/samples.png $(DEMO_ARGS)
	$(BIN)/python examples/visualize_latents.py --vae $(DEMO_MODEL) --vae_subfolder vae \
		--resolution $(DEMO_RESOLUTION) --output_dir outputs/demo

# The demo app (app/app.py) on the bundled toy pipeline, offline: http://127.0.0.1:7860 (APP_ARGS="--model ...").
app: venv
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} $(BIN)/python app/app.py $(APP_ARGS)

# A Hugging Face Space folder that runs without dc_ae_hf: the app, its Space card and requirements, the built-in
# images, the toy pipeline as a self-contained folder and the app's picture helpers generated from dc_ae_hf.
SPACE_DIR ?= outputs/space
space: venv
	$(BIN)/python scripts/make_space.py $(SPACE_DIR)

# Debian's Chromium for the app's browser test (tests/app/); nothing happens where it is installed.
browser:
	@command -v chromium >/dev/null 2>&1 || apt-get install -y -q chromium >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)

lint quality: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

style: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: venv browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# The base install (`pip install dc-ae-hf`, no extras) in its own virtual environment: import, load, sample.
BASE_VENV ?= .venv-base
smoke-base:
	$(PYTHON) -m venv $(BASE_VENV)
	$(BASE_VENV)/bin/pip install -q --upgrade pip
	$(BASE_VENV)/bin/pip install -q $(TORCH_SPEC)
	$(BASE_VENV)/bin/pip install -q .
	cd $(BASE_VENV) && HF_HUB_OFFLINE=1 bin/python $(CURDIR)/scripts/smoke_base_install.py

# A self-contained folder in plain diffusers: a virtual environment (.venv-plain) with torch and diffusers' own
# requirements only (no dc_ae_hf, no torchdiffeq) loads the folders that `prepare` writes with dc_ae_hf (a tiny
# pipeline saved with self_contained=True, the bundled toy pipeline), samples with the scheduler and the euler solver,
# decodes with AutoModel, and compares with what dc_ae_hf's own classes give (scripts/smoke_plain_diffusers.py).
PLAIN_VENV ?= .venv-plain
PLAIN_DIR ?= outputs/smoke-plain
smoke-plain: venv
	$(PYTHON) -m venv $(PLAIN_VENV)
	$(PLAIN_VENV)/bin/pip install -q --upgrade pip
	$(PLAIN_VENV)/bin/pip install -q $(TORCH_SPEC)
	$(PLAIN_VENV)/bin/pip install -q "diffusers>=0.36"
	rm -rf $(PLAIN_DIR)
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/smoke_plain_diffusers.py prepare $(PLAIN_DIR)
	cd $(PLAIN_VENV) && HF_HUB_OFFLINE=1 bin/python $(CURDIR)/scripts/smoke_plain_diffusers.py check $(abspath $(PLAIN_DIR))

bench: venv
	$(BIN)/python benchmarks/bench_autoencoder.py --quick

clean:
	rm -rf $(VENV) $(BASE_VENV) $(PLAIN_VENV) build dist *.egg-info .pytest_cache .ruff_cache
