"""Redis, as wanhook uses it: every key (``keys``), the Lua scripts and their loader (``scripts``), the task
store (``store``), writes gathered into one round trip (``group_commit``) and acknowledged once replicated
(``replication``), the connection (``connection``) or an embedded server (``embedded``), the events' audit
(``audit``) and the settings every process shares (``installation``)."""
