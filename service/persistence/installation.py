"""The settings every process of one installation (one Redis) must share, checked at each start.

Two processes that disagree on where videos are kept, how long tasks and videos are kept, or what the data
directory holds, do not fail: they quietly diverge. A ``serve`` started without ``WANHOOK_STORAGE_URL`` next
to one with it stored its videos on disk while the other stored them in S3, and each answered for the
other's tasks wrongly; the elected sweeper applies its own retention to everyone's tasks. So the first
process to start records these settings in Redis (``keys.INSTALLATION``), and any later one whose settings
differ refuses to start with one line naming the setting (``ConfigError``: exit status 2).

Changing one on purpose: stop every process, change the setting everywhere, run
``wanhook installation record`` once with the new settings (it replaces the record), then start them again.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from ..config import Settings
from ..core.errors import ConfigError
from . import keys

# field -> the variable that sets it (named in the refusal).
SETTING = {
    "storage": "WANHOOK_STORAGE_URL",
    "task_retention_seconds": "WANHOOK_TASK_RETENTION_SECONDS",
    "video_retention_seconds": "WANHOOK_VIDEO_RETENTION_SECONDS",
    "data_dir": "WANHOOK_DATA_DIR",
}


def shared(settings: Settings) -> dict[str, str]:
    """This process's values of the shared settings, as recorded."""
    store = settings.object_store
    if store is None:
        storage = "local"
        # Videos are kept in the data directory and tasks name them by path: every process must see the same
        # directory at the same path.
        role = f"videos in {settings.videos_dir}"
    else:
        storage = f"s3://{store.bucket}/{store.prefix}"
        # Only the part files of downloads: each host may have a directory of its own.
        role = "part files only"
    return {
        "storage": storage,
        "task_retention_seconds": repr(settings.task_retention_seconds),
        "video_retention_seconds": repr(settings.video_retention_seconds),
        "data_dir": role,
    }


async def check(redis: Redis, settings: Settings) -> None:
    """Record the shared settings if this is the first process (or a field is new), else compare: a
    ``ConfigError`` naming the first setting that disagrees."""
    mine = shared(settings)
    async with redis.pipeline(transaction=True) as pipe:
        # One transaction: two processes starting at once cannot each record half of their settings.
        for field, value in mine.items():
            pipe.hsetnx(keys.INSTALLATION, field, value)
        pipe.hmget(keys.INSTALLATION, list(mine))
        *_, recorded = await pipe.execute()
    for (field, value), theirs in zip(mine.items(), recorded, strict=True):
        theirs = theirs.decode() if isinstance(theirs, bytes) else theirs
        if theirs != value:
            raise ConfigError(
                f"{SETTING[field]} disagrees with the other processes of this installation: this one has "
                f"{field} = {value!r}, Redis records {theirs!r}; set it alike everywhere (to change it on "
                f"purpose: stop every process, then run `wanhook installation record` with the new settings)"
            )


async def record(redis: Redis, settings: Settings) -> dict[str, str]:
    """Replace the record with this process's settings (a change on purpose); the previous record."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.INSTALLATION)
        pipe.delete(keys.INSTALLATION)
        mapping: dict[FieldT, EncodableT] = dict(shared(settings).items())
        pipe.hset(keys.INSTALLATION, mapping=mapping)
        previous, *_ = await pipe.execute()
    return {_text(k): _text(v) for k, v in previous.items()}


async def show(redis: Redis) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in (await redis.hgetall(keys.INSTALLATION)).items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
