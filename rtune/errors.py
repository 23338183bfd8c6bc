"""The one error a user can cause and fix: `UserError`, whose message is one line that names the fix.

The command line prints it as `rtune: error: <message>` and exits with 2. Raised inside a Ray task, actor or
Train worker it travels back by its type: Ray re-raises a task's exception on the caller as an instance of
both its own wrapper and the original class, and Ray Train and Ray Data keep the original as a cause, so
`user_error_in` finds it without reading any message text.
"""

from __future__ import annotations

from typing import Optional


class UserError(ValueError):
    """A mistake the user can fix (a bad override, a missing file, a damaged checkpoint, a malformed record);
    the message is one line and names the fix."""


def user_error_in(err: BaseException) -> Optional[UserError]:
    """The UserError that `err` is or wraps (Ray's task wrappers, Ray Train's worker-group errors, `raise ...
    from`), or None."""
    seen = set()
    todo = [err]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UserError):
            cause = getattr(current, "cause", None)  # Ray's RayTaskError(UserError) keeps the original here
            return cause if isinstance(cause, UserError) else current
        todo += [getattr(current, "cause", None), current.__cause__, current.__context__]
        failures = getattr(current, "worker_failures", None)  # Ray Train V2: {rank: exception}
        if isinstance(failures, dict):
            todo += list(failures.values())
    return None
