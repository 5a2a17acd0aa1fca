"""wanhook: DashScope Wan text-to-video without polling."""
