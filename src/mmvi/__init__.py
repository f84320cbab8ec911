"""mmvi: multimodal representation learning, NLL versus minimum variation of information."""

__version__ = "0.1.0"
