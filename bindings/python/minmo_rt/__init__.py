"""minmo-rt: streaming inference runtime for MinMo-style speech-language models.

    rt = minmo_rt.Runtime("bundle/")
    with rt.session(task="asr") as s:
        s.push(pcm_int16, 16000)      # as often as audio arrives
        s.end_of_turn()
        for event in s.events():      # text tokens, turn-taking probabilities, end
            ...
"""
from ._core import (
    BundleError,
    CacheFullError,
    DeviceError,
    InvalidInputError,
    MinmoError,
    SessionClosedError,
    UnsupportedVersionError,
    set_num_threads,
)
from .audio import read_wav, write_wav
from .runtime import Runtime
from .session import Event, Session

__version__ = "0.1.0"

__all__ = [
    "Runtime", "Session", "Event", "read_wav", "write_wav", "set_num_threads",
    "MinmoError", "BundleError", "UnsupportedVersionError", "InvalidInputError", "CacheFullError",
    "SessionClosedError", "DeviceError", "__version__",
]
