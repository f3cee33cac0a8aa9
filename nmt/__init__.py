"""nmt: a from-scratch encoder-decoder Transformer that translates descriptions into code."""

__version__ = "0.1.0"
