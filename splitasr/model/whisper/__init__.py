"""OpenAI's Whisper tiny.en, split inside its encoder: architecture (:mod:`.model`), text
decoding (:mod:`.decoding`) and weights (:mod:`.weights`, read by :mod:`.ct2`)."""

from splitasr.model.whisper.decoding import WhisperDecoder
from splitasr.model.whisper.model import NAME, WhisperConfig, WhisperModel
from splitasr.model.whisper.weights import load_whisper, state_dict_from_ct2

__all__ = ["NAME", "WhisperConfig", "WhisperDecoder", "WhisperModel", "load_whisper", "state_dict_from_ct2"]
