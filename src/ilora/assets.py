"""Offline assets (model weights, data sets shipped as pip packages): the error for a missing one.

It lives below both ``ilora.models`` (which locates the MobileNetV2 weights) and ``ilora.tasks``
(which locate data and text encoders), so neither has to import the other to raise it.
"""


class AssetMissingError(FileNotFoundError):
    """An offline asset (model or data package) is not installed; the message says how to fix it."""
