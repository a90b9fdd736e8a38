"""The Gradio app: the only package that imports gradio (``docs/architecture.md``)."""

from alignlab.ui.blocks import build_app, default_preset, launch_options

__all__ = ["build_app", "default_preset", "launch_options"]
