"""The one base of every model read from a file or job metadata (catalog, scenario): a field
it does not know is refused, not silently dropped, and a loaded model cannot be changed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
