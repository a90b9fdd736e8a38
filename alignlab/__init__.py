"""AlignLab: watch DPO change a language model, with evidence that the change is real."""

__version__ = "0.1.0"
