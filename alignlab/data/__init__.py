"""Preference data: pairs and thumbs rows, presets with their probe sets, the question set, file formats."""
