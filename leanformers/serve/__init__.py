"""The OpenAI-compatible server: the scheduler that lets sequences join and leave a running batch
(scheduler.py, sequence.py), and the HTTP routes over it (app.py, with FastAPI; server.py runs them)."""

from .scheduler import QueueFull, Scheduler
from .sequence import SamplingParams, Sequence, Update

__all__ = ["QueueFull", "SamplingParams", "Scheduler", "Sequence", "Update"]
