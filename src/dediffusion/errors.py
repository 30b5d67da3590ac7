"""The exceptions a user can cause; the CLI reports them as one clear line instead of a traceback."""

from .config import ConfigError
from .data.images import DataSourceError, ImageLoadError, NoImagesError
from .eval.qa import ExamplesFileError
from .llm.base import LLMError
from .models.decoder import DecoderLoadError
from .models.dediffusion import CheckpointMismatchError, ModelLoadError
from .train.loop import NonFiniteLossError

USER_ERRORS = (
    ConfigError,
    ImageLoadError,
    NoImagesError,
    DataSourceError,
    DecoderLoadError,
    CheckpointMismatchError,
    ModelLoadError,
    NonFiniteLossError,
    FileNotFoundError,
    LLMError,
    ExamplesFileError,
)
