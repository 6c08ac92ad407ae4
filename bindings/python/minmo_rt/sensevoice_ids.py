"""Small constants shared with the export side that the runtime needs without importing torch."""

SENSEVOICE_LANGUAGE_IDS = {"auto": 0, "zh": 3, "en": 4, "yue": 7, "ja": 11, "ko": 12, "nospeech": 13}
SENSEVOICE_EVENT_QUERY, SENSEVOICE_EMOTION_QUERY = 1, 2
SENSEVOICE_ITN_QUERY, SENSEVOICE_NO_ITN_QUERY = 14, 15


def sensevoice_query_ids(language: str, use_itn: bool) -> list[int]:
    """The four SenseVoice query ids [language, event, emotion, itn]."""
    if language not in SENSEVOICE_LANGUAGE_IDS:
        raise ValueError(f"unknown language {language!r}; known: {sorted(SENSEVOICE_LANGUAGE_IDS)}")
    return [SENSEVOICE_LANGUAGE_IDS[language], SENSEVOICE_EVENT_QUERY, SENSEVOICE_EMOTION_QUERY,
            SENSEVOICE_ITN_QUERY if use_itn else SENSEVOICE_NO_ITN_QUERY]
