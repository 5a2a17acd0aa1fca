"""Counters tests and benchmarks read through GET /_emulator/stats."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Stats:
    creates: int = 0  # every create call that reached the endpoint
    creates_throttled: int = 0  # answered 429 by the per-model submit rate
    upload_policies: int = 0  # temporary-storage upload policies asked for (one an uploaded file)
    reads: int = 0
    reads_by_task: dict[str, int] = field(default_factory=dict)
    lists: int = 0
    cancels: int = 0
    max_running_seen: dict[str, int] = field(default_factory=dict)
    events_published: int = 0  # events, not copies or attempts
    push_attempts: int = 0
    push_failures: int = 0
    certificate_requests: int = 0  # GETs of the push-signing certificate, or of anything beside it
    video_requests: int = 0
    downloads_broken: int = 0

    def clear(self) -> None:
        self.__dict__.update(Stats().__dict__)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)
