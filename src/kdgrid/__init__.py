"""kdgrid: which teacher, distilled how, suits which non-autoregressive student."""

__version__ = "0.1.0"
