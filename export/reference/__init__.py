"""PyTorch reference modules: the numerical oracle for every runtime backend.

Each module takes its architecture config as a dataclass (``<Name>Config``) whose ``to_dict`` is
what the bundle manifest records, and its ``state_dict`` names are the tensor names stored in the
bundle's weights file.
"""
from .configs import (
    FbankFrontendConfig,
    WhisperFrontendConfig,
    SenseVoiceSmallConfig,
    SenseVoiceLargeConfig,
    ProjectorConfig,
    Qwen2Config,
    DuplexConfig,
    ChunkSpec,
    OutputProjectorConfig,
    VoiceLMConfig,
)
from .frontend import KaldiFbankFrontend, WhisperLogMelFrontend, apply_lfr
from .encoder_small import SenseVoiceSmallEncoder
from .encoder_large import SenseVoiceLargeEncoder
from .projector import InputProjector
from .qwen2 import Qwen2Decoder, KVCache
from .duplex import DuplexPredictor
from .voice_decoder import (ENDED_TOKEN, NEED_TEXT_TOKEN, OutputProjector, VoiceLM, VoiceTokenStream, SplitMix64,
                            ras_sample, generate_speech_tokens)
from .configs import FlowConfig, HiftConfig
from .flow import Flow
from .hift import HiFT
from .token2wav import token2wav_offline, token2wav_rerun, flow_offline

__all__ = [
    "FbankFrontendConfig", "WhisperFrontendConfig", "SenseVoiceSmallConfig", "SenseVoiceLargeConfig",
    "ProjectorConfig", "Qwen2Config", "DuplexConfig", "ChunkSpec",
    "KaldiFbankFrontend", "WhisperLogMelFrontend", "apply_lfr",
    "SenseVoiceSmallEncoder", "SenseVoiceLargeEncoder", "InputProjector",
    "Qwen2Decoder", "KVCache", "DuplexPredictor", "OutputProjectorConfig", "VoiceLMConfig",
    "OutputProjector", "VoiceLM", "VoiceTokenStream", "SplitMix64", "ras_sample", "generate_speech_tokens", "NEED_TEXT_TOKEN", "ENDED_TOKEN",
    "FlowConfig", "HiftConfig", "Flow", "HiFT", "token2wav_offline", "token2wav_rerun", "flow_offline",
]
