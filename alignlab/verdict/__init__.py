"""The evidence in plain words, the findings and their rules, the verdict and its remedy, the runs side by side."""
