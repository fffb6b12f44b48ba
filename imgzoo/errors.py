"""imgzoo's own exceptions that more than one layer raises; each says what came, what was expected and what to do."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the requested model, with the reason and the fix."""


class ChecksumError(CheckpointError):
    """A weights file whose sha256 differs from the one its weights entry records."""
