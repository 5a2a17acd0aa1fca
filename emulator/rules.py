"""DashScope's rules for Wan text-to-video, as Alibaba Cloud's public documentation states them.

The emulator answers from this statement and from nothing else: it imports no part of wanhook, so a
mistake in wanhook's own model table (``service/models.py``) is not repeated here, and
``tests/test_model_tables.py`` compares the two and names every difference.

Each fact carries its source. The pages, by the short names used below:

- REF: "Wan - text-to-video API reference (2.1-2.6)",
  https://www.alibabacloud.com/help/en/model-studio/legacy-wan-text-to-video-api-reference
  (formerly at https://www.alibabacloud.com/help/en/model-studio/text-to-video-api-reference,
  https://www.alibabacloud.com/help/doc-detail/2865250.html), and its Chinese edition
  https://help.aliyun.com/zh/model-studio/text-to-video-api-reference
- GUIDE: "Text-to-video" user guide, https://www.alibabacloud.com/help/en/model-studio/text-to-video-guide
- REF-2.1: the May 2025 edition of REF (wan2.1 only), which states the 2.1 rate limits
- TASKS: "Manage asynchronous tasks", https://www.alibabacloud.com/help/en/model-studio/manage-asynchronous-tasks
- ERRORS: "Error codes", https://www.alibabacloud.com/help/en/model-studio/error-code
- LIMITS: "Rate limits", https://www.alibabacloud.com/help/en/model-studio/rate-limit

Where the documentation is silent the entry says "undocumented" and what the emulator does instead.
"""

from __future__ import annotations

from dataclasses import dataclass

# REF, "Request parameters", parameters.size: "W*H" strings, grouped in tiers by the short side.
TIERS: dict[str, tuple[str, ...]] = {
    "480P": ("832*480", "480*832", "624*624"),
    "720P": ("1280*720", "720*1280", "960*960", "1088*832", "832*1088"),
    "1080P": ("1920*1080", "1080*1920", "1440*1440", "1632*1248", "1248*1632"),
}

# REF, input.negative_prompt: "up to 500 characters; the excess is truncated automatically".
NEGATIVE_PROMPT_MAX = 500
# REF, parameters.seed: an integer in [0, 2147483647].
SEED_MAX = 2147483647
# REF, parameters.shot_type: "single" (the default) or "multi"; wan2.6 only; "multi" takes effect only
# with prompt_extend true ("Multi-shot narrative ... enable this feature by setting "prompt_extend": true
# and "shot_type":"multi"").
SHOT_TYPES = ("single", "multi")
# TASKS: reads, lists and cancels share 20 queries per second per account.
QUERY_QPS = 20
# TASKS: a task can be read for 24 hours; afterwards its status is UNKNOWN.
TASK_LIFETIME_SECONDS = 24 * 3600
# TASKS, "Query a task list": the window from start_time to end_time is at most 24 hours.
LIST_WINDOW_SECONDS = 24 * 3600
# TASKS, "Query a task list": page_size from 1 to 100 (undocumented upper bound kept from the SDK's use).
LIST_PAGE_SIZE_MAX = 100

# The parameters every text-to-video model takes. REF, "Request parameters".
COMMON_INPUT = ("prompt", "negative_prompt")
COMMON_PARAMETERS = ("size", "duration", "prompt_extend", "watermark", "seed")
# What the official SDK adds on its own and a server must tolerate: dashscope's VideoSynthesis sends a
# deprecated input.extend_prompt, and SDK 2.x input.function = "video-synthesis" (SDK source,
# dashscope/aigc/video_synthesis.py).
SDK_INPUT = ("extend_prompt", "function")


@dataclass(frozen=True)
class Model:
    name: str
    default_size: str  # REF, parameters.size, "Default value" per model
    tiers: tuple[str, ...]  # REF, parameters.size, tiers per model
    durations: tuple[int, ...]  # REF, parameters.duration
    default_duration: int  # REF, parameters.duration, "Default value"
    prompt_max: int  # REF, input.prompt: longer text is truncated, not refused
    submit_rps: int  # REF / REF-2.1 / LIMITS: task submissions per second, per account
    max_running: int  # the same pages: tasks running at once; more wait as PENDING
    audio: bool  # REF / GUIDE: the model makes sound (input.audio_url and parameters.audio)
    shot_type: bool  # REF: parameters.shot_type (multi-shot narrative)
    returns_actual_prompt: bool  # REF, response of a succeeded task: output.actual_prompt
    usage: str  # REF, response "usage": "video" (video_duration/video_ratio) or "wan2.6" (see USAGE)
    source: str

    @property
    def sizes(self) -> tuple[str, ...]:
        return tuple(size for tier in self.tiers for size in TIERS[tier])

    @property
    def input_fields(self) -> tuple[str, ...]:
        return COMMON_INPUT + (("audio_url",) if self.audio else ())

    @property
    def parameters(self) -> tuple[str, ...]:
        return COMMON_PARAMETERS + (("audio",) if self.audio else ()) + (("shot_type",) if self.shot_type else ())

    def tier_of(self, size: str) -> str:
        return next(tier for tier, sizes in TIERS.items() if size in sizes)


MODELS: dict[str, Model] = {
    model.name: model
    for model in (
        # REF model table: "wan2.6-t2v ... 720P, 1080P; duration: an integer from 2 to 15 seconds";
        # GUIDE: "integer video durations (2-15 seconds)", audio "(wan2.5 and wan2.6)", multi-shot "(wan2.6
        # only)"; default size 1920*1080. Prompt: up to 1500 characters. The response of a wan2.6 task
        # has orig_prompt but no actual_prompt, and its usage is duration/size/SR/... (REF, response
        # example for wan2.6). RPS 5, concurrent 5 (REF, "Rate limits" table).
        Model("wan2.6-t2v", "1920*1080", ("720P", "1080P"), tuple(range(2, 16)), 5, 1500, 5, 5,
              audio=True, shot_type=True, returns_actual_prompt=False, usage="wan2.6",
              source="REF model table and request parameters; GUIDE"),
        # REF model table: "wan2.5-t2v-preview ... 480P, 720P, 1080P; 5 or 10 seconds"; 24 fps; audio:
        # automatic dubbing or a custom audio file (help.aliyun.com edition: "音频能力 ... (仅wan2.5支持)"
        # before wan2.6 was added). Prompt up to 1500 characters. RPS 5, concurrent 5.
        Model("wan2.5-t2v-preview", "1920*1080", ("480P", "720P", "1080P"), (5, 10), 5, 1500, 5, 5,
              audio=True, shot_type=False, returns_actual_prompt=True, usage="video",
              source="REF model table and request parameters"),
        # REF model table: "wan2.2-t2v-plus ... silent video; 480P, 1080P; 5 seconds"; 30 fps; prompt up
        # to 800 characters. RPS 2, concurrent 2.
        Model("wan2.2-t2v-plus", "1920*1080", ("480P", "1080P"), (5,), 5, 800, 2, 2,
              audio=False, shot_type=False, returns_actual_prompt=True, usage="video",
              source="REF model table and request parameters"),
        # REF model table: "wanx2.1-t2v-turbo ... silent; 480P, 720P; 5 seconds"; "wanx2.1-t2v-plus ...
        # silent; 720P; 5 seconds". REF-2.1: RPS 2, concurrent 2 for both.
        Model("wanx2.1-t2v-turbo", "1280*720", ("480P", "720P"), (5,), 5, 800, 2, 2,
              audio=False, shot_type=False, returns_actual_prompt=True, usage="video",
              source="REF model table; REF-2.1 rate limits"),
        Model("wanx2.1-t2v-plus", "1280*720", ("720P",), (5,), 5, 800, 2, 2,
              audio=False, shot_type=False, returns_actual_prompt=True, usage="video",
              source="REF model table; REF-2.1 rate limits"),
        # REF-2.1 (Singapore edition) names the 2.1 models wan2.1-t2v-turbo and wan2.1-t2v-plus, "RPS 2,
        # concurrent tasks 2".
        Model("wan2.1-t2v-turbo", "1280*720", ("480P", "720P"), (5,), 5, 800, 2, 2,
              audio=False, shot_type=False, returns_actual_prompt=True, usage="video",
              source="REF-2.1 model introduction and rate limits"),
        Model("wan2.1-t2v-plus", "1280*720", ("720P",), (5,), 5, 800, 2, 2,
              audio=False, shot_type=False, returns_actual_prompt=True, usage="video",
              source="REF-2.1 model introduction and rate limits"),
    )
}

# REF, input.audio_url: a public http or https URL of a wav or mp3 file, 3 to 30 s, at most 15 MB. Longer
# audio is cut to the video's duration; shorter leaves the rest silent. The emulator fetches nothing, so
# it checks only the form of the URL.
AUDIO_URL_SCHEMES = ("http", "https")
# REF, parameters.audio: whether to add sound when no audio_url is given; default true (wan2.5 and
# wan2.6 make sound unless told not to). Ignored when audio_url is given.
AUDIO_DEFAULT = True

# REF, response "usage" of a succeeded task, by the model's usage shape.
USAGE = {
    "video": ("video_duration", "video_ratio", "video_count"),
    "wan2.6": ("duration", "size", "SR", "input_video_duration", "output_video_duration", "video_count"),
}

# TASKS, "Query a task list": the fields of each listed task (times in epoch milliseconds).
LIST_FIELDS = ("task_id", "status", "model_name", "region", "request_id", "api_key_id", "gmt_create",
               "start_time", "end_time", "user_api_unique_key")

# ERRORS: the HTTP status of each code this API answers.
ERROR_STATUS: dict[str, int] = {
    "InvalidParameter": 400,
    "DataInspectionFailed": 400,  # content moderation refused the input
    "IPInfringementSuspect": 400,
    "Arrearage": 400,  # the account is overdue
    "UnsupportedOperation": 400,  # TASKS, "Cancel a task": only a PENDING task can be cancelled
    "InvalidApiKey": 401,
    "AccessDenied": 403,
    "AccessDenied.Unpurchased": 403,
    "ModelNotFound": 404,
    "Throttling": 429,
    "Throttling.RateQuota": 429,  # over the submit RPS; clears within about a minute
    "Throttling.BurstRate": 429,
    "Throttling.AllocationQuota": 429,  # quota used up: does not clear by waiting
    "InternalError": 500,
    "InternalError.Algo": 500,
    "SystemError": 500,
    "InternalError.Timeout": 500,
}
# The messages DashScope gives, where a page quotes one (ERRORS; REF for the missing async header; TASKS
# for cancel). Codes without a quoted message get a plain sentence of the same meaning from the emulator.
MESSAGES: dict[str, str] = {
    "InvalidApiKey": "Invalid API-key provided.",
    "AccessDenied": "current user api does not support synchronous calls",
    "ModelNotFound": "Model not exist.",
    "Throttling.RateQuota": "Requests rate limit exceeded, please try again later.",
    "DataInspectionFailed": "Input data may contain inappropriate content.",
    "UnsupportedOperation": "Failed to cancel the task, please confirm if the task is in PENDING status.",
}

# Undocumented, decided here: a parameter the model does not take (shot_type for wan2.5, audio_url for
# wan2.2, resolution, which is image-to-video's and not text-to-video's) is answered 400 InvalidParameter.
# The real service may ignore it; the stand-in is strict, so that a client sending one is caught in tests.
STRICT_UNKNOWN_PARAMETERS = True
