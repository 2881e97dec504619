"""Building `Synthesize` envelopes in tests from one flat set of keywords: the request's own
fields go into its `SpeechSpec`, the transport's (prompt, resume point, fault, ...) into the
envelope; the spec's defaults for a page's inputs; a round trip over a real pipe."""

from __future__ import annotations

import dataclasses

from cosyvoice3.spec import SpeechSpec
from worker.protocol import Synthesize

SPEC_FIELDS = frozenset(field.name for field in dataclasses.fields(SpeechSpec))
# the spec's own defaults, for the fields a test leaves out (a new field needs no test edited)
SPEC_DEFAULTS = {field.name: field.default for field in dataclasses.fields(SpeechSpec)
                 if field.default is not dataclasses.MISSING}


def synthesize_msg(request_id: str, text: str, **fields) -> Synthesize:
    spec = {name: fields.pop(name) for name in list(fields) if name in SPEC_FIELDS}
    return Synthesize(request_id, SpeechSpec(text, **spec), **fields)


def echo(conn) -> None:
    """A process's whole life: send back the one message it receives (the far end of a real pipe)."""
    conn.send(conn.recv())
    conn.close()


def through_a_pipe(msg):
    """`msg` after a round trip over a real `multiprocessing` pipe to a spawned process (pickled
    twice, as every message between the app and the worker is)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    here, there = context.Pipe()
    process = context.Process(target=echo, args=(there,))
    process.start()
    here.send(msg)
    back = here.recv()
    process.join(30)
    return back
