"""Optimizers that run without importing torch._dynamo until something else imports it.

torch.optim imports torch._dynamo (the torch.compile machinery: sympy, torch.fx, inductor's
config; ~1 s, more on a busy machine) the first time an optimizer is built: its methods
are wrapped so that Dynamo never traces into them (`torch._disable_dynamo`), and `step`
calls `torch._dynamo.graph_break()`. Outside torch.compile both do nothing, and nothing
can be compiling while torch._dynamo has not been imported (torch.compile imports it). So
until some code imports torch._dynamo, this seam runs the wrapped functions as plain
calls; from then on it calls torch's own wrappers, exactly as before.

This is the one place that touches those private torch wrappers. It recognises them by
their code objects; if a torch release changes them, `defer_dynamo` changes nothing (the
run is just slower to start). tests/test_startup.py checks that an optimizer steps, zeroes
and saves its state without the import, and that torch.compile still works afterwards.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.optimizer import Optimizer, _use_grad_for_differentiable

DYNAMO = "torch._dynamo"
# torch's wrapper closures, told apart by their code (shared by every closure of each kind).
_DISABLE_CODE = torch._disable_dynamo(lambda: None).__code__
_USE_GRAD_CODE = _use_grad_for_differentiable(lambda self: None).__code__
_HOOK_CODE = Optimizer.profile_hook_step(lambda self: None).__code__


def defer_dynamo(cls: type[Optimizer]) -> bool:
    """Let optimizers of class `cls` (and its bases up to Optimizer) be built, stepped,
    zeroed, saved and loaded without importing torch._dynamo. Idempotent; True if the step
    was taken over (False: a torch whose wrappers this does not know, left as it is)."""
    for klass in cls.__mro__:
        for attr in vars(klass).values():
            if getattr(attr, "__code__", None) is _DISABLE_CODE:
                _defer_disable(attr)
        if klass is Optimizer:
            break
    return _defer_step(cls)


def _defer_disable(inner: Callable[..., Any]) -> None:
    # torch._disable_dynamo's wrapper calls fn.__dynamo_disable once set (torch caches
    # torch._dynamo.disable(fn) there on the first call); we set it first.
    closure = inspect.getclosurevars(inner).nonlocals
    fn, recursive = closure.get("fn"), closure.get("recursive", True)
    if fn is None or hasattr(fn, "__dynamo_disable"):
        return
    disabled = None

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal disabled
        if disabled is None:
            if DYNAMO not in sys.modules:
                return fn(*args, **kwargs)
            disabled = sys.modules[DYNAMO].disable(fn, recursive, wrapping=False)
            fn.__dynamo_disable = disabled  # from now on torch's own, as if we never were
        return disabled(*args, **kwargs)

    fn.__dynamo_disable = call


def _defer_step(cls: type[Optimizer]) -> bool:
    step = cls.step
    if getattr(step, "deferred_dynamo", False):
        return True
    hooked = getattr(step, "__code__", None) is _HOOK_CODE  # an instance was built already
    use_grad = step.__wrapped__ if hooked else step
    if getattr(use_grad, "__code__", None) is not _USE_GRAD_CODE:
        return False
    raw = use_grad.__wrapped__

    # torch's _use_grad without `import torch._dynamo` and its two graph breaks.
    @functools.wraps(raw)
    def deferred(*args: Any, **kwargs: Any) -> Any:
        if DYNAMO in sys.modules:
            return use_grad(*args, **kwargs)
        prev_grad = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(args[0].defaults["differentiable"])
            return raw(*args, **kwargs)
        finally:
            torch.set_grad_enabled(prev_grad)

    if hooked:
        deferred = Optimizer.profile_hook_step(deferred)
        deferred.hooked = True
    deferred.deferred_dynamo = True
    cls.step = deferred
    return True
