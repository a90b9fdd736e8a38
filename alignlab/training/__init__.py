"""A run of a method's stages on TRL's trainers, streamed step by step, and its memory and threads."""
