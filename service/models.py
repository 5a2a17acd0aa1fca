"""DashScope's Wan text-to-video models and their rules, as wanhook checks a task before anything is sent.

The emulator has its own statement of DashScope's rules, written from the documentation
(``emulator/rules.py``); ``tests/test_model_tables.py`` compares the two and lists where wanhook differs
on purpose (it refuses an over-long prompt that DashScope would cut).
"""

from __future__ import annotations

from dataclasses import dataclass

SIZES_480P = ("832*480", "480*832", "624*624")
SIZES_720P = ("1280*720", "720*1280", "960*960", "1088*832", "832*1088")
SIZES_1080P = ("1920*1080", "1080*1920", "1440*1440", "1632*1248", "1248*1632")
TIERS = {"480P": SIZES_480P, "720P": SIZES_720P, "1080P": SIZES_1080P}

NEGATIVE_PROMPT_MAX = 500
SEED_MAX = 2147483647
# parameters.shot_type: one shot or a multi-shot narrative (wan2.6); "multi" works only with prompt_extend.
SHOT_TYPES = ("single", "multi")


@dataclass(frozen=True)
class ModelRules:
    name: str
    default_size: str
    tiers: tuple[str, ...]
    durations: tuple[int, ...]
    default_duration: int
    prompt_max: int
    submit_rps: int
    max_running: int
    audio: bool = False  # makes sound, its own or that of the track at audio_url (which only these take)
    shot_type: bool = False  # takes shot_type

    @property
    def sizes(self) -> tuple[str, ...]:
        return tuple(size for tier in self.tiers for size in TIERS[tier])


MODELS: dict[str, ModelRules] = {
    rules.name: rules
    for rules in (
        ModelRules("wan2.2-t2v-plus", "1920*1080", ("480P", "1080P"), (5,), 5, 800, 2, 2),
        ModelRules("wanx2.1-t2v-turbo", "1280*720", ("480P", "720P"), (5,), 5, 800, 2, 2),
        ModelRules("wanx2.1-t2v-plus", "1280*720", ("720P",), (5,), 5, 800, 2, 2),
        # Singapore's names for the 2.1 models.
        ModelRules("wan2.1-t2v-turbo", "1280*720", ("480P", "720P"), (5,), 5, 800, 2, 2),
        ModelRules("wan2.1-t2v-plus", "1280*720", ("720P",), (5,), 5, 800, 2, 2),
        ModelRules("wan2.5-t2v-preview", "1920*1080", ("480P", "720P", "1080P"), (5, 10), 5, 1500, 5, 5, audio=True),
        ModelRules(
            "wan2.6-t2v", "1920*1080", ("720P", "1080P"), tuple(range(2, 16)), 5, 1500, 5, 5, audio=True, shot_type=True
        ),
    )
}

DEFAULT_MODEL = "wan2.2-t2v-plus"


def parse_size(size: str) -> tuple[int, int]:
    width, height = size.split("*")
    return int(width), int(height)
