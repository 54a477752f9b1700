"""Label Studio's ML backend protocol on the same server (/predict, /setup, /health). (being written)"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Backend:
    url: str | None = None
    api_key: str | None = None
    local_files_root: str | None = None
    text_field: str | None = None

    def add_routes(self, app: Any, service: Any) -> None:
        pass
