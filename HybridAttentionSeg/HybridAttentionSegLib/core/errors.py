"""Exception hierarchy. Every message names the problem and the remedy."""


class HybridSegError(Exception):
    """Base class of all HybridAttentionSeg errors."""


class UserInputError(HybridSegError):
    """Bad input or usage: the CLI exits with code 2 and prints the message on one line."""


class InvalidVolumeError(UserInputError):
    """The input volume cannot be segmented (2D, too thin, NaN, wrong channel count, unreadable...)."""


class UnknownNameError(UserInputError, KeyError):
    """An architecture, model, method or class name that does not exist."""

    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnsupportedMethodError(UserInputError):
    """An attention method the architecture does not support."""


class WeightsError(UserInputError):
    """Weights are missing, unsafe, corrupt or do not match the architecture."""


class ChecksumError(WeightsError):
    """A file's hash differs from the one the model card declares."""


class DownloadError(UserInputError):
    """A download failed (offline, HTTP error, truncated)."""


class UnsafeModelError(WeightsError):
    """A model file would execute code when loaded (pickle with code, TorchScript, torch.package...)."""


class CancelledError(HybridSegError):
    """The user cancelled a long-running job."""
