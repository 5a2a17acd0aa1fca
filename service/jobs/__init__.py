"""The job machinery: job streams with capped attempts and dead letters (``queue``, ``deadletters``), the
work loop (``worker``) and the supervision of long-running loops (``supervisor``)."""
