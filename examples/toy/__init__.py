"""The toy DC-AE 1.5 recipe at CPU scale (README.md here). Run its entry points as modules from the checkout's root,
e.g. ``python -m examples.toy.run_recipe --mode smoke --output_dir /tmp/toy-smoke``."""
