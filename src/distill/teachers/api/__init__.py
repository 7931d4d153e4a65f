"""API teachers: a teacher reached over an OpenAI-compatible HTTP API (`distill serve`, vLLM, SGLang, a commercial
API) instead of loaded weights. So far: the client (`client.py`, waits in `pacing.py`) and the reading of a
response's log-probs as our `TopKSignal`, the API's tokens mapped to our ids (`logprobs.py`); docs/api.md. The
resumable harvest into the teacher-cache format and the `generate` backend are still to come (issue 12, item 3)."""

from distill.teachers.api.client import ApiClient, TeacherApiError
from distill.teachers.api.pacing import RateLimiter

__all__ = ["ApiClient", "RateLimiter", "TeacherApiError"]
