"""Take it home: every run tracked in trackio, and the aligned model and the pairs as folders with their Hub cards."""
