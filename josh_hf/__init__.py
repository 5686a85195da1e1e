"""josh-hf: JOSH self-training and the ToolWOZ benchmark for the Hugging Face ecosystem."""

__version__ = "0.1.0"
