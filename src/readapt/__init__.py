"""readapt: READ (REcurrent ADaptation, arXiv 2305.15348) for Hugging Face transformers.

    from readapt import ReadConfig, get_read_model, ReadModel
"""

from readapt.config import ConfigError, ReadConfig

__version__ = "0.1.0"
__all__ = ["ConfigError", "ReadConfig", "ReadModel", "get_read_model", "__version__"]


def __getattr__(name):  # keep `import readapt` light: torch-heavy modules load on first use
    if name in ("ReadModel", "get_read_model"):
        from readapt import model

        return getattr(model, name)
    raise AttributeError(name)
