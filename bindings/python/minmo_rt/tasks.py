"""Task prompts: what the user turn asks the LLM to do with the audio span."""
from __future__ import annotations

LANGUAGES = {
    "en": "English", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "yue": "Cantonese",
    "fr": "French", "de": "German", "es": "Spanish", "it": "Italian", "ru": "Russian",
}

TASK_PROMPTS = {
    "asr": "Transcribe the speech.",
    "emotion": "What is the emotion of the speaker?",
    "lid": "Which language is spoken?",
    "event": "Which audio events can be heard?",
}


DEFAULT_SYSTEM = "You are a helpful assistant."


def chat_prompt(text: str, prompt_cfg: dict | None = None, system: str | None = None) -> tuple[str, str]:
    """The ChatML text before and after the audio span of a user turn that asks ``text``:
    ``prompt_cfg`` is the manifest's ``prompt`` entry (system, audio_bos, audio_eos). The runtime
    and the minmo-tiny training recipe both build their prompts here."""
    p = dict(prompt_cfg or {})
    sys_text = system if system is not None else p.get("system", DEFAULT_SYSTEM)
    prefix = f"<|im_start|>system\n{sys_text}<|im_end|>\n<|im_start|>user\n{text}{p.get('audio_bos', '')}"
    suffix = f"{p.get('audio_eos', '')}<|im_end|>\n<|im_start|>assistant\n"
    return prefix, suffix


def task_prompt(task: str) -> str:
    """``asr``, ``emotion``, ``lid``, ``event``, ``translate:<lang>`` (e.g. ``translate:zh``) or
    ``ask:<free question>``."""
    if task in TASK_PROMPTS:
        return TASK_PROMPTS[task]
    kind, _, arg = task.partition(":")
    if kind == "translate":
        if arg not in LANGUAGES:
            raise ValueError(f"unknown target language {arg!r}; known: {', '.join(sorted(LANGUAGES))}")
        return f"Translate the speech into {LANGUAGES[arg]}:"
    if kind == "ask" and arg.strip():
        return arg.strip()
    known = ", ".join(sorted(TASK_PROMPTS) + ["translate:<lang>", "ask:<question>"])
    raise ValueError(f"unknown task {task!r}; known tasks: {known}")


#: Style presets for text-to-speech instruct mode (CosyVoice2: instruction text + <|endofprompt|>).
INSTRUCTIONS = {
    "happy": "Please speak in a happy, cheerful tone.",
    "sad": "Please speak in a sad tone.",
    "angry": "Please speak in an angry tone.",
    "calm": "Please speak calmly.",
    "fast": "Please speak quickly.",
    "slow": "Please speak slowly.",
    "cantonese": "用粤语说这句话",
    "sichuanese": "用四川话说这句话",
}


def instruction_prompt(instruction=None, instruction_text=None) -> str:
    """The instruct-mode prefix (text + ``<|endofprompt|>``) of a preset name or free text; "" for
    none. Raises InvalidInputError for an unknown preset, both given, or empty text."""
    from ._core import InvalidInputError

    if instruction is not None and instruction_text is not None:
        raise InvalidInputError("give instruction (a preset name) or instruction_text, not both")
    if instruction is not None:
        if instruction not in INSTRUCTIONS:
            raise InvalidInputError(f"unknown instruction {instruction!r}; known: {', '.join(sorted(INSTRUCTIONS))} "
                                    "(or pass free text as instruction_text)")
        return INSTRUCTIONS[instruction] + "<|endofprompt|>"
    if instruction_text is not None:
        if not str(instruction_text).strip():
            raise InvalidInputError("instruction_text is empty")
        return str(instruction_text).strip() + "<|endofprompt|>"
    return ""
