"""DashScope's rules for Wan text-to-video, as Alibaba Cloud's public documentation states them.

The emulator answers from this statement and from nothing else: it imports no part of wanhook, so a
mistake in wanhook's own model table (``service/domain/models.py``) is not repeated here, and
``tests/integration/test_model_tables.py`` compares the two and names every difference.

Each fact carries its source. The pages, by the short names used below:

- REF: "通义万相-文生视频API参考" (Wan text-to-video API reference), Model Studio, edition of 2025-12-26,
  https://help.aliyun.com/zh/model-studio/text-to-video-api-reference. Its sections: 模型概览 (model
  overview), 请求体 (request body: input.prompt, input.negative_prompt, input.audio_url, parameters.size,
  duration, prompt_extend, shot_type, watermark, seed), 响应参数 (response: orig_prompt, actual_prompt,
  usage), 使用限制 (limits), 设置音频参数 (audio settings). The international edition is "Wan -
  text-to-video API reference (2.1-2.6)",
  https://www.alibabacloud.com/help/en/model-studio/legacy-wan-text-to-video-api-reference.
- GUIDE: the "Text-to-video" user guide, edition of 2026-02-25,
  https://www.alibabacloud.com/help/en/model-studio/text-to-video-guide: "integer video durations (2-15
  seconds)", audio "(Supported by wan2.5 and wan2.6)", multi-shot "(Supported only by wan2.6)". Newer
  than REF on wan2.6's durations (REF: 5, 10 or 15), so it wins there.
- REF-2.1: the May 2025 edition of https://www.alibabacloud.com/help/en/model-studio/text-to-video-api-reference
  (wan2.1 only), "Model introduction": the 2.1 models' Singapore names, "RPS 2", "concurrent tasks 2".
- LIMITS: "限流" (rate limits), https://help.aliyun.com/zh/model-studio/rate-limit, section 视频生成 /
  万相系列: "每秒钟任务下发接口RPS限制" and "同时处理中任务数量（并发数）" per model (REF, 计费与限流, points
  there); international edition https://www.alibabacloud.com/help/en/model-studio/rate-limit.
- TASKS: "管理异步任务" (manage asynchronous tasks), https://help.aliyun.com/zh/model-studio/manage-asynchronous-tasks
  (international edition https://www.alibabacloud.com/help/en/model-studio/manage-asynchronous-tasks): the
  task list (批量查询异步任务状态) and cancel (取消异步任务接口) sections.
- ERRORS: "错误信息" (error messages), https://help.aliyun.com/zh/model-studio/error-code; international
  edition https://www.alibabacloud.com/help/en/model-studio/error-code.

- I2V: "通义万相-图生视频API参考" / "Wan - image-to-video - first frame API reference (2.1-2.6)",
  https://help.aliyun.com/zh/model-studio/image-to-video-api-reference and
  https://www.alibabacloud.com/help/en/model-studio/legacy-image-to-video-api-reference: 模型概览 (models,
  tiers, durations, fps), 请求体 (input.prompt optional, input.img_url required, input.audio_url and
  parameters.audio for wan2.5, parameters.resolution, duration, prompt_extend, seed, watermark).
- KF2V: "通义万相-首尾帧生视频API参考" / "Wan - first-and-last-frame-to-video API reference",
  https://www.alibabacloud.com/help/zh/model-studio/image-to-video-by-first-and-last-frame-api-reference
  and the guide https://www.alibabacloud.com/help/en/model-studio/image-to-video-first-and-last-frames-guide:
  "POST https://dashscope.aliyuncs.com/api/v1/services/aigc/image2video/video-synthesis", input.first_frame_url
  and input.last_frame_url (URL or "data:{MIME_type};base64,{base64_data}"), an optional prompt, "Fixed video
  duration (5 seconds)", resolution "480P/720P/1080P" (wan2.1-kf2v-plus: 720P only). The guide warns that an
  SDK older than 1.25.8 gets "url error, please check url!" (it sends kf2v to the text-to-video path).
- UPLOAD: "上传本地文件获取临时URL" / "Upload local files to get temporary URLs",
  https://help.aliyun.com/zh/model-studio/get-temporary-file-url and
  https://www.alibabacloud.com/help/en/model-studio/get-temporary-file-url: GET /api/v1/uploads with
  action=getPolicy and model; a form upload to the policy's upload_host; the file is oss://<key>, bound to
  the model and the account, "valid for 48 hours"; HTTP calls naming it need "X-DashScope-OssResourceResolve:
  enable"; the policy call is limited to 100 QPS per account and model; files at most 1 GB and the model's
  own limit.

Where the documentation is silent the entry says "undocumented" and what the emulator does instead.
"""

from __future__ import annotations

from dataclasses import dataclass

# REF, parameters.size: "W*H" strings ("必须设置为具体数值（如 1280*720），而不是 1:1或480P"), in tiers.
TIERS: dict[str, tuple[str, ...]] = {
    "480P": ("832*480", "480*832", "624*624"),
    "720P": ("1280*720", "720*1280", "960*960", "1088*832", "832*1088"),
    "1080P": ("1920*1080", "1080*1920", "1440*1440", "1632*1248", "1248*1632"),
}

# REF, input.negative_prompt: "长度不超过500个字符，超过部分会自动截断" (at most 500; the excess is cut).
NEGATIVE_PROMPT_MAX = 500
# REF, parameters.seed: "取值范围为[0, 2147483647]".
SEED_MAX = 2147483647
# REF, parameters.shot_type: "支持模型：wan2.6-t2v"; "single" (the default) or "multi"; "仅当
# "prompt_extend": true 时生效" (it takes effect only with prompt_extend true), and it overrides the prompt.
SHOT_TYPES = ("single", "multi")
# REF, step 2: "查询接口默认QPS为20"; TASKS: list and cancel each "20 QPS ... 每个账号（含主账号及其子账号）".
QUERY_QPS = 20
# REF, step 2: a task_id is valid for 24 hours; after that the read answers task_status UNKNOWN.
TASK_LIFETIME_SECONDS = 24 * 3600
# TASKS, task list: start_time and end_time are YYYYMMDDhhmmss, at most 24 hours apart; without start_time
# the window is the 24 hours before end_time, without end_time the 24 hours after start_time, without
# either the last 24 hours. In which time zone they are read is undocumented.
LIST_WINDOW_SECONDS = 24 * 3600
# TASKS, task list: page_no from 1, page_size "默认查询10条"; the largest page_size is undocumented, 100 here.
LIST_PAGE_SIZE_DEFAULT = 10
LIST_PAGE_SIZE_MAX = 100

# The fields every text-to-video model takes (REF, 请求体). Text-to-video has no parameters.resolution (a
# tier such as "720P") and no parameters.audio: both are image-to-video's.
COMMON_INPUT = ("prompt", "negative_prompt")
COMMON_PARAMETERS = ("size", "duration", "prompt_extend", "watermark", "seed")
# What the official SDK adds on its own and a server must tolerate: dashscope's VideoSynthesis sends a
# deprecated input.extend_prompt, and SDK 2.x input.function = "video-synthesis" (SDK source,
# dashscope/aigc/video_synthesis.py).
SDK_INPUT = ("extend_prompt", "function")


@dataclass(frozen=True)
class Model:
    name: str
    default_size: str  # REF, parameters.size: the default per model
    tiers: tuple[str, ...]  # REF, parameters.size: the tiers per model
    durations: tuple[int, ...]  # REF, parameters.duration (GUIDE for wan2.6)
    default_duration: int  # REF, parameters.duration: 5 where there is a choice
    prompt_max: int  # REF, input.prompt: "超过部分会自动截断": longer text is cut, not refused
    submit_rps: int  # REF-2.1 / LIMITS: task submissions per second, per account
    max_running: int  # the same pages: tasks running at once; more wait as PENDING
    audio: bool  # REF, 使用限制 and input.audio_url: makes sound, and takes input.audio_url
    shot_type: bool  # REF, parameters.shot_type
    returns_actual_prompt: bool  # REF, 响应参数, actual_prompt: "wan2.6 模型 ... 均不返回此字段"
    usage: str  # REF, 响应参数, usage: "video" (wan2.5 and older) or "wan2.6" (see USAGE)
    source: str

    @property
    def sizes(self) -> tuple[str, ...]:
        return tuple(size for tier in self.tiers for size in TIERS[tier])

    @property
    def input_fields(self) -> tuple[str, ...]:
        return COMMON_INPUT + (("audio_url",) if self.audio else ())

    @property
    def parameters(self) -> tuple[str, ...]:
        return COMMON_PARAMETERS + (("shot_type",) if self.shot_type else ())


MODELS: dict[str, Model] = {
    model.name: model
    for model in (
        # REF, 模型概览: "wan2.6-t2v ... 有声视频 ... 分辨率档位：720P、1080P"; size "默认值为 1920*1080"; prompt
        # "wan2.6-t2v：长度不超过1500个字符"; GUIDE: durations 2-15 (REF: 5, 10, 15), default 5; no
        # actual_prompt; usage duration/size/SR/input_video_duration/output_video_duration/video_count.
        # RPS 5, concurrent tasks 5 (LIMITS).
        Model(
            "wan2.6-t2v",
            "1920*1080",
            ("720P", "1080P"),
            tuple(range(2, 16)),
            5,
            1500,
            5,
            5,
            audio=True,
            shot_type=True,
            returns_actual_prompt=False,
            usage="wan2.6",
            source="REF 模型概览, 请求体, 响应参数; GUIDE (durations); LIMITS",
        ),
        # REF, 模型概览: "wan2.5-t2v-preview ... 有声视频 ... 480P、720P、1080P ... 5秒、10秒"; size default
        # 1920*1080; prompt "长度不超过1500个字符". RPS 5, concurrent tasks 5 (LIMITS).
        Model(
            "wan2.5-t2v-preview",
            "1920*1080",
            ("480P", "720P", "1080P"),
            (5, 10),
            5,
            1500,
            5,
            5,
            audio=True,
            shot_type=False,
            returns_actual_prompt=True,
            usage="video",
            source="REF 模型概览, 请求体, 响应参数; LIMITS",
        ),
        # REF, 模型概览: "wan2.2-t2v-plus ... 无声视频 ... 480P、1080P ... 5秒"; size default 1920*1080; prompt
        # "wan2.2及以下版本模型：长度不超过800个字符"; duration "固定为5秒". RPS 2, concurrent tasks 2 (LIMITS).
        Model(
            "wan2.2-t2v-plus",
            "1920*1080",
            ("480P", "1080P"),
            (5,),
            5,
            800,
            2,
            2,
            audio=False,
            shot_type=False,
            returns_actual_prompt=True,
            usage="video",
            source="REF 模型概览, 请求体; LIMITS",
        ),
        # REF, 模型概览: "wanx2.1-t2v-turbo ... 无声视频 ... 480P、720P ... 5秒" and "wanx2.1-t2v-plus ... 720P
        # ... 5秒"; size default 1280*720 for both. REF-2.1: RPS 2, concurrent tasks 2 for both.
        Model(
            "wanx2.1-t2v-turbo",
            "1280*720",
            ("480P", "720P"),
            (5,),
            5,
            800,
            2,
            2,
            audio=False,
            shot_type=False,
            returns_actual_prompt=True,
            usage="video",
            source="REF 模型概览, 请求体; REF-2.1 rate limits",
        ),
        Model(
            "wanx2.1-t2v-plus",
            "1280*720",
            ("720P",),
            (5,),
            5,
            800,
            2,
            2,
            audio=False,
            shot_type=False,
            returns_actual_prompt=True,
            usage="video",
            source="REF 模型概览, 请求体; REF-2.1 rate limits",
        ),
        # REF-2.1 (Singapore) names the 2.1 models wan2.1-t2v-turbo and wan2.1-t2v-plus, with the same
        # limits; their tiers and defaults are those of the wanx2.1 names.
        Model(
            "wan2.1-t2v-turbo",
            "1280*720",
            ("480P", "720P"),
            (5,),
            5,
            800,
            2,
            2,
            audio=False,
            shot_type=False,
            returns_actual_prompt=True,
            usage="video",
            source="REF-2.1 model introduction and rate limits",
        ),
        Model(
            "wan2.1-t2v-plus",
            "1280*720",
            ("720P",),
            (5,),
            5,
            800,
            2,
            2,
            audio=False,
            shot_type=False,
            returns_actual_prompt=True,
            usage="video",
            source="REF-2.1 model introduction and rate limits",
        ),
    )
}

# The kinds, by the path each is created at (REF, I2V: video-generation; KF2V: image2video).
T2V, I2V, KF2V = "t2v", "i2v", "kf2v"
PATHS = {T2V: "video-generation", I2V: "video-generation", KF2V: "image2video"}
# I2V and KF2V, parameters.resolution: "480P", "720P", "1080P"; the video keeps about the tier's pixels and the
# input image's aspect ratio ("自动缩放至相近总像素，视频宽高比将尽量与输入图像 img_url 的宽高比保持一致").
RESOLUTION_PIXELS = {"480P": 832 * 480, "720P": 1280 * 720, "1080P": 1920 * 1080}
# I2V, input.img_url (KF2V, first_frame_url and last_frame_url, the same): "图像格式：JPEG、JPG、PNG（不支持
# 透明通道）、BMP、WEBP"; "图像的宽度和高度范围为[360, 2000]，单位为像素"; "文件大小不超过10MB". Given as an
# http(s) URL, "data:{MIME_type};base64,{base64_data}", or an oss:// temporary URL (UPLOAD).
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")
IMAGE_SIDES = (360, 2000)
IMAGE_BYTES_MAX = 10 * 1024 * 1024
# UPLOAD: the temporary URL's life, the policy call's rate, and a file's largest size (also the model's own).
UPLOAD_TTL_SECONDS = 48 * 3600
UPLOAD_POLICY_QPS = 100
UPLOAD_BYTES_MAX = 1 << 30
OSS_RESOLVE_HEADER = "x-dashscope-ossresourceresolve"


@dataclass(frozen=True)
class ImageModel:
    """An image-to-video or first-and-last-frame model (I2V, KF2V)."""

    name: str
    kind: str
    tiers: tuple[str, ...]  # parameters.resolution
    default_resolution: str  # I2V, parameters.resolution: per model
    durations: tuple[int, ...]
    default_duration: int
    prompt_max: int  # cut, not refused, as for text-to-video
    submit_rps: int
    max_running: int
    audio: bool  # I2V: wan2.5 takes input.audio_url and parameters.audio (default true)
    source: str

    @property
    def image_fields(self) -> tuple[str, ...]:
        return ("img_url",) if self.kind == I2V else ("first_frame_url", "last_frame_url")

    @property
    def input_fields(self) -> tuple[str, ...]:
        return ("prompt", "negative_prompt") + self.image_fields + (("audio_url",) if self.audio else ())

    @property
    def parameters(self) -> tuple[str, ...]:
        return ("resolution", "duration", "prompt_extend", "watermark", "seed") + (("audio",) if self.audio else ())


IMAGE_MODELS: dict[str, ImageModel] = {
    model.name: model
    for model in (
        # I2V 模型概览: "wan2.5-i2v-preview ... 有声视频 ... 480P、720P、1080P ... 5秒，10秒 ... 24fps"; resolution
        # default 1080P; prompt at most 1500 characters. Quota: LIMITS (as wan2.5-t2v-preview, 5 and 5).
        ImageModel(
            "wan2.5-i2v-preview",
            I2V,
            ("480P", "720P", "1080P"),
            "1080P",
            (5, 10),
            5,
            1500,
            5,
            5,
            True,
            "I2V 模型概览, 请求体; LIMITS",
        ),
        # I2V 模型概览: "wan2.2-i2v-flash ... 无声视频 ... 480P、720P、1080P ... 5秒 ... 30fps"; default 720P.
        ImageModel(
            "wan2.2-i2v-flash",
            I2V,
            ("480P", "720P", "1080P"),
            "720P",
            (5,),
            5,
            800,
            2,
            2,
            False,
            "I2V 模型概览, 请求体; LIMITS",
        ),
        # I2V 模型概览: "wan2.2-i2v-plus ... 480P、1080P ... 5秒"; default 1080P.
        ImageModel(
            "wan2.2-i2v-plus",
            I2V,
            ("480P", "1080P"),
            "1080P",
            (5,),
            5,
            800,
            2,
            2,
            False,
            "I2V 模型概览, 请求体; LIMITS",
        ),
        # I2V 模型概览: "wanx2.1-i2v-plus ... 720P ... 5秒"; "wanx2.1-i2v-turbo ... 480P、720P ... 3、4、5秒"; the
        # 2025-06-05 edition: "任务下发接口QPS限制 2", "同时处理中任务数量 2" for both.
        ImageModel(
            "wanx2.1-i2v-plus",
            I2V,
            ("720P",),
            "720P",
            (5,),
            5,
            800,
            2,
            2,
            False,
            "I2V 模型概览, 计费与限流 (2025-06-05 edition)",
        ),
        ImageModel(
            "wanx2.1-i2v-turbo",
            I2V,
            ("480P", "720P"),
            "720P",
            (3, 4, 5),
            5,
            800,
            2,
            2,
            False,
            "I2V 模型概览, 计费与限流 (2025-06-05 edition)",
        ),
        # KF2V: "wan2.1-kf2v-plus ... 分辨率档位：720P 视频时长：5秒 固定规格：30fps"; its Beijing name in the
        # SDK and the Chinese examples is wanx2.1-kf2v-plus. The guide: wan2.2-kf2v-flash, 480P/720P/1080P, 5 s.
        # Default resolution for wan2.2-kf2v-flash: undocumented in what was read; 720P here.
        ImageModel(
            "wan2.2-kf2v-flash",
            KF2V,
            ("480P", "720P", "1080P"),
            "720P",
            (5,),
            5,
            800,
            2,
            2,
            False,
            "KF2V guide; LIMITS",
        ),
        ImageModel("wan2.1-kf2v-plus", KF2V, ("720P",), "720P", (5,), 5, 800, 2, 2, False, "KF2V 模型概览; LIMITS"),
        ImageModel(
            "wanx2.1-kf2v-plus",
            KF2V,
            ("720P",),
            "720P",
            (5,),
            5,
            800,
            2,
            2,
            False,
            "KF2V (Chinese edition) examples; LIMITS",
        ),
    )
}

# REF, input.audio_url: "支持 HTTP 或 HTTPS 协议"; a wav or mp3 file of 3 to 30 s and at most 15 MB; longer
# audio is cut to the video's duration, shorter leaves the rest silent. The emulator fetches nothing, so
# it checks only the form of the URL.
AUDIO_URL_SCHEMES = ("http", "https")
# REF, 设置音频参数: wan2.5 and later always make sound, "音频行为由是否传入 input.audio_url 决定": without
# audio_url they dub the video themselves, with it they follow the track. Text-to-video documents no
# switch for a silent video.

# REF, 响应参数, usage: video_duration and video_ratio "仅 wan2.5 及以下版本模型时返回"; duration, size, SR,
# input_video_duration and output_video_duration "仅在使用 wan2.6 模型时返回"; video_count always.
USAGE = {
    "video": ("video_duration", "video_ratio", "video_count"),
    "wan2.6": ("duration", "size", "SR", "input_video_duration", "output_video_duration", "video_count"),
}

# TASKS, task list, 出参描述: the answer is total, total_page, page_no, page_size, request_id and data, each
# item with these fields (gmt_create, start_time, end_time in epoch milliseconds; a time is absent until
# it has happened, as in the page's RUNNING example without end_time). TASKS, cancel: the answer is
# {"request_id"}, and only a PENDING task can be cancelled (UnsupportedOperation otherwise).
LIST_FIELDS = (
    "task_id",
    "status",
    "model_name",
    "region",
    "request_id",
    "api_key_id",
    "caller_uid",
    "caller_parent_id",
    "gmt_create",
    "start_time",
    "end_time",
    "user_api_unique_key",
)

# ERRORS: the HTTP status of each code this API answers.
ERROR_STATUS: dict[str, int] = {
    "InvalidParameter": 400,
    "InvalidParameter.DataInspection": 400,  # an input image or file could not be downloaded
    "DataInspectionFailed": 400,  # content moderation refused the input (REF, 使用限制)
    "IPInfringementSuspect": 400,  # the same (REF, 使用限制)
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
# The messages DashScope gives: ERRORS, its table of HTTP status, code and message; REF, 请求头, for the
# missing async header; TASKS for a cancel that comes too late. Other codes the emulator answers with a
# sentence of its own (InternalError.Algo for a failed render, InvalidParameter naming the field).
MESSAGES: dict[str, str] = {
    "InvalidParameter": "Required parameter(s) missing or invalid, please check the request parameters.",
    "InvalidParameter.DataInspection": "Unable to download the media resource during the data inspection process.",
    "DataInspectionFailed": "Input or output data may contain inappropriate content.",
    "Arrearage": "Access denied, please make sure your account is in good standing.",
    "InvalidApiKey": "Invalid API-key provided.",
    "AccessDenied": "current user api does not support synchronous calls",
    "AccessDenied.Unpurchased": "Access to model denied. Please make sure you are eligible for using the model.",
    "ModelNotFound": "Model can not be found.",
    "Throttling": "Requests throttling triggered.",
    "Throttling.RateQuota": "Requests rate limit exceeded, please try again later.",
    "Throttling.AllocationQuota": "Allocated quota exceeded, please increase your quota limit.",
    "InternalError": "An internal error has occured, please try again later or contact service support.",
    "InternalError.Algo": (
        "An internal error has occured during execution, please try again later or contact service support."
    ),
    "SystemError": "An system error has occured, please try again later.",
    "InternalError.Timeout": (
        "An internal timeout error has occured during execution, please try again later or contact service support."
    ),
    "UnsupportedOperation": "Failed to cancel the task, please confirm if the task is in PENDING status.",
}

# KF2V guide: what an old SDK gets for a first-and-last-frame model sent to the text-to-video path (as
# InvalidParameter here; the code is undocumented).
WRONG_PATH_MESSAGE = "url error, please check url!"
# UPLOAD: an oss:// URL without the resolve header "causes errors"; which one is undocumented (InvalidParameter).

# Undocumented, decided here: a field the model does not take (shot_type for wan2.5, audio_url for
# wan2.2; resolution and audio, which are image-to-video's) is answered 400 InvalidParameter. The real
# service may ignore it; the stand-in is strict, so that a client sending one is caught in tests.
STRICT_UNKNOWN_PARAMETERS = True
