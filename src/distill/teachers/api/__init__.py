"""API teachers: a teacher reached over an OpenAI-compatible HTTP API (`distill serve`, vLLM, SGLang, a commercial
API) instead of loaded weights. So far only the client (`client.py`, waits in `pacing.py`; docs/api.md): harvesting
top log-probs into the teacher-cache format, mapping the API's tokens to our tokenizer, and the `generate` backend
are still to come (issue 12, item 3)."""

from distill.teachers.api.client import ApiClient, TeacherApiError
from distill.teachers.api.pacing import RateLimiter

__all__ = ["ApiClient", "RateLimiter", "TeacherApiError"]
