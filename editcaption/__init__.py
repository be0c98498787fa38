"""EditCaption: precise editing instructions for image pairs, at cluster scale."""

__version__ = "0.1.0"
