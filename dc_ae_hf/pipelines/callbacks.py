"""diffusers ``PipelineCallback`` s for ``DCAE15Pipeline``."""

from __future__ import annotations

from typing import Any

from diffusers.callbacks import PipelineCallback


class GuidanceCutoffCallback(PipelineCallback):
    """Turn classifier-free guidance off after a number of steps (the class-conditional ``SDCFGCutoffCallback``).

    After step ``cutoff_step_index`` (or ``int(num_timesteps * cutoff_step_ratio)``) it sets
    ``pipe._guidance_scale = 1.0``: the following steps use the conditional velocity and skip the unconditional
    batch. (diffusers' text-to-image callbacks set 0.0, which those pipelines read as "no guidance"; in
    ``DCAE15Pipeline`` 0 is the unconditional model and 1 is no guidance.)

        pipe(labels, guidance_scale=3.0, callback_on_step_end=GuidanceCutoffCallback(cutoff_step_ratio=0.5))
    """

    tensor_inputs: list[str] = []

    def callback_fn(self, pipeline, step_index, timestep, callback_kwargs) -> dict[str, Any]:
        cutoff_step_index = self.config.cutoff_step_index
        if cutoff_step_index is None:
            cutoff_step_index = int(pipeline.num_timesteps * self.config.cutoff_step_ratio)
        if step_index == cutoff_step_index:
            pipeline._guidance_scale = 1.0
        return callback_kwargs
