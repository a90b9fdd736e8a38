"""Every method as stages of TRL trainers, the settings with their ranges, the models known by name."""
