"""One lock per loaded model, held around the calls that use its shared state, so threads take turns.

A web server calls one pipeline from several threads. A fast tokenizer keeps its truncation and
padding in state that each call sets (an encoder's text was cut to another encoder's token limit); a
llama.cpp context holds one KV cache (two threads scoring at once crashed the process); vLLM's offline
engine is locked the same way, as it is not made for two callers at once. Locks live here, not on
the objects, so that stages holding a model still pickle (Ray).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def model_lock(model: Any) -> threading.RLock:
    """The lock of the loaded ``model`` (the same object gives the same lock while it lives)."""
    with _GUARD:
        return _LOCKS.setdefault(model, threading.RLock())
