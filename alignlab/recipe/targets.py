"""The model a recipe trains for real: a name it knows, a Hub id, or a local directory holding a config."""

from __future__ import annotations

from pathlib import Path

from alignlab.registry.model_shapes import KNOWN_SHAPES, RECIPE_TARGETS, ModelShape, ShapeError, known_shape


class RecipeError(ValueError):
    """A recipe cannot be built as asked; the message says what to change."""


#: Target models the recipe knows by name (dimensions from each model's config.json).
KNOWN_TARGETS: dict[str, ModelShape] = {name: KNOWN_SHAPES[name] for name in RECIPE_TARGETS}
DEFAULT_TARGET = "llama-3.1-8b-instruct"


def resolve_target(spec: str) -> ModelShape:
    """A target model spec -> its shape: a name in :data:`KNOWN_TARGETS`, its Hub id, or a local directory.

    A local directory needs only ``config.json`` (and its tokenizer files for the chat template),
    so any Hub model can be targeted by downloading its config first.
    """
    spec = (spec or "").strip()
    if not spec:
        raise RecipeError("No target model given: name one of " + ", ".join(KNOWN_TARGETS) + ", or a local directory.")
    shape = known_shape(spec)
    if shape is not None:
        return shape
    path = Path(spec).expanduser()
    if path.is_dir():
        try:
            return ModelShape.from_directory(path, label=spec)
        except ShapeError as exc:
            raise RecipeError(str(exc)) from None
    raise RecipeError(
        f"Unknown target model '{spec}'. Known: {', '.join(KNOWN_TARGETS)}; or give a local directory holding the "
        "model's config.json (e.g. `huggingface-cli download ORG/NAME config.json tokenizer_config.json "
        "--local-dir DIR`)."
    )
