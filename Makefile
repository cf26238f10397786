# dc_ae_hf developer commands. `make demo` and `make test` are the README's two commands:
# each creates/updates the virtual environment in .venv by itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The build machine caps torch at these versions (see ../shared/docs/environment.md);
# elsewhere override with `make test TORCH_SPEC=torch` to get a normal torch.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
DEMO_ARGS ?=

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo test lint style quality bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.py $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[test,dev]"
	touch $@

venv: $(VENV)/.installed

# The built-in default: the toy pipeline shipped in dc_ae_hf/assets (trained by examples/toy/run_recipe.py).
TOY_PIPELINE := dc_ae_hf/assets/toy-dcae15-shapes
demo: venv
	$(BIN)/python examples/sample.py --model $(TOY_PIPELINE) --solver euler --num_inference_steps 20 --guidance_scale 3 \
		--class_labels arrow circle crescent cross heart hexagon ring square star triangle \
		--output outputs/demo/samples.png $(DEMO_ARGS)
	$(BIN)/python examples/visualize_latents.py --vae $(TOY_PIPELINE)/vae --output_dir outputs/demo

lint quality: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

style: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: venv
	$(BIN)/python benchmarks/bench_autoencoder.py --quick

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
