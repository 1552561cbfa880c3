"""Schemathesis hooks for the run in tests/schemathesis.rs.

Generated webhooks are real: outhook sends test messages and deliveries to their
endpoints. Every URL in a request body is replaced by one on the loopback address
before the request is sent, so no generated endpoint can make outhook reach
another machine; the run starts outhook without --allow-private, so its address
policy refuses the loopback URL before any connection is made.
"""

import schemathesis

CONTAINED = "http://127.0.0.1:9/contained"


def contain(value):
    """The value with every string that holds a URL replaced by the loopback one."""
    if isinstance(value, dict):
        return {key: contain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [contain(item) for item in value]
    if isinstance(value, str) and "://" in value:
        return CONTAINED
    if isinstance(value, bytes) and b"://" in value:
        return CONTAINED.encode()
    return value


@schemathesis.hook
def before_call(context, case, kwargs):
    contained = contain(case.body)
    if contained != case.body:
        case.body = contained
