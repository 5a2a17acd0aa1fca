"""DashScope's Wan video models (text-to-video, image-to-video, first-and-last-frame) and their rules, as
wanhook checks a task before anything is sent.

The emulator has its own statement of DashScope's rules, written from the documentation
(``emulator/rules.py``); ``tests/integration/test_model_tables.py`` compares the two and lists where wanhook differs
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


# The task kinds and where each is created. Sources:
# - T2V: "通义万相-文生视频API参考", edition of 2025-12-26, https://help.aliyun.com/zh/model-studio/text-to-video-api-reference
#   (international edition "Wan - text-to-video API reference (2.1-2.6)",
#   https://www.alibabacloud.com/help/en/model-studio/legacy-wan-text-to-video-api-reference): 模型概览 (models,
#   tiers, durations, sound), 请求体 (input.prompt and its length per model, parameters.size and its default per
#   model, duration, shot_type); the May 2025 edition of
#   https://www.alibabacloud.com/help/en/model-studio/text-to-video-api-reference (wan2.1 only: the Singapore
#   names, "RPS 2", "concurrent tasks 2"); the "Text-to-video" guide of 2026-02-25,
#   https://www.alibabacloud.com/help/en/model-studio/text-to-video-guide (wan2.6: "integer video durations (2-15
#   seconds)"). Quotas (submit_rps, max_running): "限流", https://help.aliyun.com/zh/model-studio/rate-limit
#   (https://www.alibabacloud.com/help/en/model-studio/rate-limit), 视频生成 / 万相系列.
# - I2V: "Wan - image-to-video - first frame API reference (2.1-2.6)",
#   https://www.alibabacloud.com/help/en/model-studio/legacy-image-to-video-api-reference (Chinese edition
#   https://help.aliyun.com/zh/model-studio/image-to-video-api-reference): POST
#   /api/v1/services/aigc/video-generation/video-synthesis, input.img_url required, input.prompt optional,
#   parameters.resolution (a tier, not size), parameters.audio and input.audio_url for wan2.5 only.
# - KF2V: "Wan - first-and-last-frame-to-video API reference",
#   https://www.alibabacloud.com/help/en/model-studio/image-to-video-by-first-and-last-frame-api-reference
#   and the user guide https://www.alibabacloud.com/help/en/model-studio/image-to-video-first-and-last-frames-guide:
#   POST /api/v1/services/aigc/image2video/video-synthesis, input.first_frame_url and input.last_frame_url,
#   an optional prompt, a fixed 5 s, resolution 480P/720P/1080P per model. The dashscope SDK
#   (dashscope/aigc/video_synthesis.py) switches its task to "image2video" for every "kf2v" model.
T2V, I2V, KF2V = "t2v", "i2v", "kf2v"
KINDS = (T2V, I2V, KF2V)
# The API's names of the kinds (../shared/spec/contract.md: "kind": "text-to-video" by default); the short
# names, the model families' own, are taken too.
KIND_NAMES = {"text-to-video": T2V, "image-to-video": I2V, "first-and-last-frame": KF2V}
ENDPOINTS = {
    T2V: "/services/aigc/video-generation/video-synthesis",
    I2V: "/services/aigc/video-generation/video-synthesis",
    KF2V: "/services/aigc/image2video/video-synthesis",
}
# The image fields of each kind, all in DashScope's ``input``.
IMAGE_FIELDS = {T2V: (), I2V: ("img_url",), KF2V: ("first_frame_url", "last_frame_url")}
# Resolution tiers (image kinds): the output keeps the input image's aspect ratio at about the tier's pixel
# count (I2V, parameters.resolution).
RESOLUTIONS = ("480P", "720P", "1080P")

# Accepted images, the same for img_url, first_frame_url and last_frame_url (I2V and KF2V, input.img_url /
# input.first_frame_url: "图像格式：JPEG、JPG、PNG（不支持透明通道）、BMP、WEBP", "图像的宽度和高度范围为[360,
# 2000]，单位为像素", "文件大小不超过10MB"). Given as a public http(s) URL, as base64
# ("data:{MIME_type};base64,{base64_data}"), or as a temporary oss:// URL (see TEMPORARY_STORAGE).
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")  # Pillow's names
IMAGE_MIN_SIDE = 360
IMAGE_MAX_SIDE = 2000
IMAGE_MAX_BYTES = 10 * 1024 * 1024
# "Upload local files to get temporary URLs", https://www.alibabacloud.com/help/en/model-studio/get-temporary-file-url:
# GET /api/v1/uploads?action=getPolicy&model=<model>, then a form POST to upload_host; the file is
# oss://<upload_dir>/<name>, bound to that model and account, valid 48 hours; a create naming one needs the
# header X-DashScope-OssResourceResolve: enable.
TEMPORARY_STORAGE_HOURS = 48
# The input fields that hold images, whatever the kind.
IMAGE_INPUTS = ("img_url", "first_frame_url", "last_frame_url")


def brief_image(value: str) -> str:
    """An image field as tasks are shown: a base64 data URL (up to a megabyte or so) by its type, size and
    digest instead of its bytes, so that lists, event streams and callbacks stay small; a URL as it is."""
    head, comma, data = value.partition(",")
    if not value.startswith("data:") or not comma:
        return value
    import hashlib

    return f"{head},… ({len(data)} characters, sha256 {hashlib.sha256(data.encode()).hexdigest()[:16]})"


OSS_RESOLVE_HEADER = "X-DashScope-OssResourceResolve"


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
    kind: str = T2V
    # Image kinds: parameters.resolution (one of ``tiers``) instead of size; this is the tier wanhook sends
    # when none is asked (it always sends one, so DashScope's own default never decides).
    default_resolution: str = ""
    prompt_required: bool = True

    @property
    def endpoint(self) -> str:
        return ENDPOINTS[self.kind]

    @property
    def image_fields(self) -> tuple[str, ...]:
        return IMAGE_FIELDS[self.kind]

    @property
    def sizes(self) -> tuple[str, ...]:
        return tuple(size for tier in self.tiers for size in TIERS[tier])


MODELS: dict[str, ModelRules] = {
    rules.name: rules
    for rules in (
        # Text-to-video (T2V, 模型概览; size default, prompt length and duration from 请求体): wan2.2-t2v-plus
        # 480P/1080P, 5 s, silent, 1920*1080 by default, prompt 800; quota 2 and 2 (rate-limit page).
        ModelRules("wan2.2-t2v-plus", "1920*1080", ("480P", "1080P"), (5,), 5, 800, 2, 2),
        # wanx2.1-t2v-turbo 480P/720P, wanx2.1-t2v-plus 720P; 5 s, silent, 1280*720 by default, prompt 800; quota
        # 2 and 2 (the May 2025 edition).
        ModelRules("wanx2.1-t2v-turbo", "1280*720", ("480P", "720P"), (5,), 5, 800, 2, 2),
        ModelRules("wanx2.1-t2v-plus", "1280*720", ("720P",), (5,), 5, 800, 2, 2),
        # Singapore's names for the 2.1 models (the May 2025 edition), with the same limits.
        ModelRules("wan2.1-t2v-turbo", "1280*720", ("480P", "720P"), (5,), 5, 800, 2, 2),
        ModelRules("wan2.1-t2v-plus", "1280*720", ("720P",), (5,), 5, 800, 2, 2),
        # wan2.5-t2v-preview: 480P/720P/1080P, 5 or 10 s, with sound (input.audio_url), 1920*1080 by default,
        # prompt 1500; quota 5 and 5 (rate-limit page).
        ModelRules("wan2.5-t2v-preview", "1920*1080", ("480P", "720P", "1080P"), (5, 10), 5, 1500, 5, 5, audio=True),
        # wan2.6-t2v: 720P/1080P, 2 to 15 s (the guide; the reference says 5, 10 or 15), with sound, shot_type,
        # 1920*1080 by default, prompt 1500; quota 5 and 5 (rate-limit page).
        ModelRules(
            "wan2.6-t2v", "1920*1080", ("720P", "1080P"), tuple(range(2, 16)), 5, 1500, 5, 5, audio=True, shot_type=True
        ),
        # Image-to-video (I2V, 模型概览 and parameters): tiers, durations; default_resolution as I2V's
        # parameters.resolution gives it per model. prompt optional; wan2.5 takes 1500 characters, the
        # others 800 (I2V, input.prompt). Quotas: I2V 计费与限流 (2.1: "任务下发接口QPS限制 2", "同时处理中
        # 任务数量 2"); for 2.2 and 2.5 the rate-limit page https://www.alibabacloud.com/help/en/model-studio/rate-limit.
        ModelRules(
            "wan2.5-i2v-preview",
            "",
            ("480P", "720P", "1080P"),
            (5, 10),
            5,
            1500,
            5,
            5,
            audio=True,
            kind=I2V,
            default_resolution="1080P",
            prompt_required=False,
        ),
        ModelRules(
            "wan2.2-i2v-flash",
            "",
            ("480P", "720P", "1080P"),
            (5,),
            5,
            800,
            2,
            2,
            kind=I2V,
            default_resolution="720P",
            prompt_required=False,
        ),
        ModelRules(
            "wan2.2-i2v-plus",
            "",
            ("480P", "1080P"),
            (5,),
            5,
            800,
            2,
            2,
            kind=I2V,
            default_resolution="1080P",
            prompt_required=False,
        ),
        ModelRules(
            "wanx2.1-i2v-plus",
            "",
            ("720P",),
            (5,),
            5,
            800,
            2,
            2,
            kind=I2V,
            default_resolution="720P",
            prompt_required=False,
        ),
        ModelRules(
            "wanx2.1-i2v-turbo",
            "",
            ("480P", "720P"),
            (3, 4, 5),
            5,
            800,
            2,
            2,
            kind=I2V,
            default_resolution="720P",
            prompt_required=False,
        ),
        # First and last frame (KF2V): 5 s fixed; wan2.1-kf2v-plus 720P only, wan2.2-kf2v-flash
        # 480P/720P/1080P (the guide); prompt optional, at most 800 characters. Quotas: the rate-limit page.
        ModelRules(
            "wan2.2-kf2v-flash",
            "",
            ("480P", "720P", "1080P"),
            (5,),
            5,
            800,
            2,
            2,
            kind=KF2V,
            default_resolution="720P",
            prompt_required=False,
        ),
        ModelRules(
            "wan2.1-kf2v-plus",
            "",
            ("720P",),
            (5,),
            5,
            800,
            2,
            2,
            kind=KF2V,
            default_resolution="720P",
            prompt_required=False,
        ),
        # The Beijing name of the same model (the SDK's and the Chinese page's examples).
        ModelRules(
            "wanx2.1-kf2v-plus",
            "",
            ("720P",),
            (5,),
            5,
            800,
            2,
            2,
            kind=KF2V,
            default_resolution="720P",
            prompt_required=False,
        ),
    )
}

DEFAULT_MODEL = "wan2.2-t2v-plus"
DEFAULT_MODELS = {T2V: DEFAULT_MODEL, I2V: "wan2.2-i2v-flash", KF2V: "wan2.2-kf2v-flash"}


def parse_size(size: str) -> tuple[int, int]:
    width, height = size.split("*")
    return int(width), int(height)
