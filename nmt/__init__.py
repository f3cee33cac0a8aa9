"""nmt: a from-scratch encoder-decoder Transformer that translates descriptions into code."""

__version__ = "0.1.0"
__all__ = ["Translator"]


def __getattr__(name: str):
    # Lazy, so that `import nmt` (and the CLI's --help) does not pay for importing torch.
    if name == "Translator":
        from nmt.decoding.translator import Translator

        return Translator
    raise AttributeError(f"module 'nmt' has no attribute {name!r}")
