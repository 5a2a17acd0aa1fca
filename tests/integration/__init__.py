"""Tests through real processes on loopback: a real Redis, real uvicorn (`wanhook serve`), the emulator, real HTTP."""
