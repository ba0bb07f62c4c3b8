"""Secrets never reach a file: token-like settings and values are redacted wherever a command line or settings are
recorded (run_config.json, attempts.json, sweep.json, pack.json). A runner moves `--hub_token` into the process
environment (HF_TOKEN), where the hub client reads it, so no serialized argument holds it either."""

import re

REDACTED = "<redacted>"
SECRET_NAME = re.compile(r"(^|[_-])(token|secret|password|passwd|api[_-]?key|access[_-]?key|credentials?)$", re.I)
SECRET_VALUE = re.compile(  # hub, OpenAI-style, GitHub and Slack tokens
    r"\b(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|xox[abpr]-[\w-]{10,})"
)


def is_secret_name(name: str) -> bool:
    """Whether a setting's name says it holds a secret (hub_token, api_key, …; not max_new_tokens or tokenizer)."""
    return bool(SECRET_NAME.search(name.lstrip("-")))


def redact_text(text: str) -> str:
    return SECRET_VALUE.sub(REDACTED, text)


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with the value of every secret flag (`--hub_token X`, `--hub_token=X`) and every token-like
    word replaced."""
    out, hide_next = [], False
    for token in map(str, argv):
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        flag, sep, _ = token.partition("=")
        if token.startswith("-") and is_secret_name(flag):
            out.append(f"{flag}={REDACTED}" if sep else token)
            hide_next = not sep
            continue
        out.append(redact_text(token))
    return out


def redact_settings(value):
    """Settings (nested dicts and lists) with secret-named entries and token-like strings replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_name(str(k)) and v else redact_settings(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_settings(v) for v in value]
    return redact_text(value) if isinstance(value, str) else value
