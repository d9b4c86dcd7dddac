"""The compiled-kernel tests' spy: which kernels ran, and how often."""

from collections import Counter
from typing import Any


def count_calls(monkeypatch: Any, module: Any, *names: str) -> Counter:
    """Replace each ``module.<name>`` (for the test) by a wrapper that counts its calls in
    the returned Counter and runs it."""
    calls: Counter = Counter()
    for name in names:
        real = getattr(module, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    return calls
