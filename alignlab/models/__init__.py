"""A model spec to a loaded model, batched generation, log-probabilities, a tiny model for tests."""
