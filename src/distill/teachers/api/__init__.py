"""API teachers: a teacher reached over an OpenAI-compatible HTTP API (`distill serve`, vLLM, SGLang, a commercial
API) instead of loaded weights: the client (`client.py`, waits in `pacing.py`), the reading of a response's
log-probs as our `TopKSignal`, the API's tokens mapped to our ids (`logprobs.py`), and the resumable harvest of an
endpoint's top log-probs into the teacher-cache format (`harvest.py`, one request per sequence in `scoring.py`);
docs/api.md."""

from distill.teachers.api.client import ApiClient, TeacherApiError
from distill.teachers.api.pacing import RateLimiter

__all__ = ["ApiClient", "RateLimiter", "TeacherApiError"]
