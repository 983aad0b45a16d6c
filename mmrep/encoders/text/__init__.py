"""Text encoders: BERT from local Hugging Face checkpoints, and its tokenizers."""

__all__ = []
