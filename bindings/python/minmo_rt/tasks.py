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
