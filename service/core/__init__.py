"""The ground every layer stands on, with no knowledge of tasks: the one error tree (``errors``), what logs
must never carry (``redact``), the least pace of a peer (``pace``), bounded JSON documents (``documents``) and
the thread pools blocking I/O runs on (``pools``)."""
