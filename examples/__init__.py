"""Examples of dc_ae_hf, run from the checkout's root: `examples/sample.py` and `examples/visualize_latents.py` as
scripts, the CPU-scale recipe as the package `examples.toy` (`python -m examples.toy.run_recipe`)."""
