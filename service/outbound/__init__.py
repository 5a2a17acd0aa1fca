"""Every request wanhook sends out: the clients that never reach inward (``egress``), DashScope's API
(``dashscope``), a video's download (``videofetch``, written by ``partwriter``) and where videos are kept
(``storage``, ``objectstore``)."""
