"""The request cache lives in `cleanroom.lm.cache` (one home for the lab, the audit and the teachers)."""

from cleanroom.lm.cache import RequestCache, request_key

__all__ = ["RequestCache", "request_key"]
