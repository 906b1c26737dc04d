"""Where a cast's sessions run: the contract (`base`), the local stage (`local`) and the
LiveKit stage (`livekit`)."""

from workers.room.stage.base import (
    Humans,
    ModelsFor,
    Stage,
    StageCast,
    StageError,
    StageEvents,
    make_session,
)

__all__ = [
    "Humans",
    "ModelsFor",
    "Stage",
    "StageCast",
    "StageError",
    "StageEvents",
    "make_session",
]
