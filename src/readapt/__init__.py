"""readapt: READ (REcurrent ADaptation, arXiv 2305.15348) for Hugging Face transformers.

    from readapt import ReadConfig, get_read_model, ReadModel
    from readapt import ReadTrainer          # transformers.Trainer that saves and resumes READ
"""

from readapt.config import ConfigError, ReadConfig

__version__ = "0.1.0"
__all__ = ["ConfigError", "ReadConfig", "ReadModel", "ReadTrainer", "get_read_model", "__version__"]


def __getattr__(name):  # keep `import readapt` light: torch-heavy modules load on first use
    if name in ("ReadModel", "get_read_model"):
        from readapt import model

        return getattr(model, name)
    if name == "ReadTrainer":  # imports transformers.Trainer (and accelerate): only when asked for
        from readapt.trainer import ReadTrainer

        return ReadTrainer
    raise AttributeError(name)
