"""The one error type a user's bad input becomes: reported as one line naming the field, file or point."""


class ConfigError(ValueError):
    """A bad setting, reported to the user as one line naming the field."""


def one_line(text) -> str:
    """The first non-empty line of a message (an error's text can run over several lines)."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""
