"""The recipe's outputs in `--results_dir`, one module per report: `quick_full` (the smoke, quick and full modes),
`sweep` (the channel sweep), `regime` (the paper's regime) and `default` (the built-in default); `pictures` (the
reconstruction and sample grids) and `card` (the bundled pipeline and its model card); `common` (what they share)."""
