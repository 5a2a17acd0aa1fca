"""What happens to a task, one module a flow: submission under the quota (``submission``, ``quota``), the
download (``download``, ``diskspace``), failures and their reasons (``failures``), callbacks (``callbacks``),
the event feed (``feed``), and the sweeper, retention and removals that keep it all finite."""
