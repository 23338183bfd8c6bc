"""rtune: fine-tune causal LMs on Ray Train, configured with Hydra, from the Hugging Face ecosystem."""

__version__ = "0.1.0"
