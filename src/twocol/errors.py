"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""

MESSAGE_LIMIT = 2000


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """A message as one printable line of at most `limit` characters: line breaks and other
    unprintable characters (as in a hostile file name) are escaped, the rest cut."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class TwocolError(Exception):
    """Base for bad input: a config, a device list, a dataset or a checkpoint we cannot use."""

    exit_code = 2


class ConfigError(TwocolError):
    pass


class PlacementError(TwocolError):
    pass


class DataError(TwocolError):
    pass


class CheckpointError(TwocolError):
    pass


class LockError(TwocolError):
    """Another process is writing the run directory or dataset."""


class TrainingDiverged(TwocolError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 3
