"""l2l: an experiment runner for learned optimizers (Andrychowicz et al., 2016)."""

__version__ = "0.1.0"
