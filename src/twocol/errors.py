"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


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


class TrainingDiverged(TwocolError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 3
