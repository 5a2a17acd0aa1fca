"""What a task is, without I/O: its states and shape (``task``), the models and their rules (``models``), a
create's checks (``validation``), a completion event read from its CloudEvent (``events``) and the addresses
wanhook never sends to (``addresses``)."""
