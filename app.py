"""AlignLab's Gradio app (a Hugging Face Space): build the Blocks from alignlab.ui and launch."""

import os

import alignlab.serving.gpu  # noqa: F401  (first: on ZeroGPU, `spaces` must be imported before torch)
from alignlab.training.memory import keep_freed_memory

keep_freed_memory()  # next, before torch's and gradio's imports start threads: every thread reuses freed memory

from alignlab.pipeline.warmup import preload  # noqa: E402
from alignlab.ui import build_app, default_preset, launch_options  # noqa: E402

demo = build_app()
preload()  # TRL's trainers and Triton's key at start-up, not in the first click (a ZeroGPU worker inherits them)

if __name__ == "__main__":
    if os.environ.get("ALIGNLAB_WARMUP", "1") != "0" and not alignlab.serving.gpu.on_zero_gpu():
        from alignlab.pipeline.warmup import warm_up
        from alignlab.ui.common import default_model

        # The first user's click should not pay for a process's first training (on a GPU: compiling the kernels),
        # nor for the original model's scores of the opening preset's probe pairs.
        # ALIGNLAB_WARMUP=0 skips it (about 9 s on the embedded model on 2 CPU cores).
        seconds = warm_up(default_model(), preset=default_preset())
        print(f"Warmed up in {seconds['total']:.1f} s")
    demo.launch(**launch_options())
