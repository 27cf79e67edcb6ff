"""Local vision-language models (image-text-to-text) behind one interface, :class:`LanguageModel`."""

from medfm.models.language.base import LanguageModel, LanguageModelInfo

__all__ = ["LanguageModel", "LanguageModelInfo"]
