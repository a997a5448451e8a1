"""What the Logic reports to ``onEvent``: one enum shared by the segmentation and catalog logics."""

import enum


class ProcessEvent(str, enum.Enum):
    """What ``onEvent`` is told, in order: STARTED, PROGRESS/LOG..., IMPORTING, then one of the last three."""

    STARTED = "started"
    PROGRESS = "progress"
    LOG = "log"
    IMPORTING = "importing"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
