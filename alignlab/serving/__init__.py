"""The shared machine: the one line for model work, identical work shared, ZeroGPU, what may load."""
