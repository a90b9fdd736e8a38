"""AlignLab's Gradio app (a Hugging Face Space): build the Blocks from alignlab.ui and launch."""

import alignlab.gpu  # noqa: F401  (first: on ZeroGPU, `spaces` must be imported before torch)
from alignlab.ui import build_app, launch_options

demo = build_app()

if __name__ == "__main__":
    demo.launch(**launch_options())
