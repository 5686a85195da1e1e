"""Helpers for tests and demos: tiny models built offline."""

from .tiny import CHAT_TEMPLATE, build_tiny_model, build_tiny_tokenizer, default_corpus

__all__ = ["CHAT_TEMPLATE", "build_tiny_model", "build_tiny_tokenizer", "default_corpus"]
