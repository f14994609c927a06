"""Edge sites: a node per site that works with the hub unreachable, and the hub's sync of it.

- ``natsd``   child nats-server processes (the hub, a site's leaf node) and their config;
- ``events``  subjects, stream names, intake parsing, the CloudEvents both sides exchange;
- ``streams`` JetStream streams (sources, mirrors) and the fetch-write-ack step;
- ``writer``  one idempotent transaction per batch, for the site's store and the hub's;
- ``node``    the site's node (``fieldtrace edge``);
- ``hub``     the hub's sync, link state, late-data re-checks (``fieldtrace hub``).

To unify with the live bus (``pipelines/live/bus.py``, issue 11) once it is on main: it sends
CloudEvents in binary mode (``ce-*`` headers) with ``Nats-Msg-Id = source + " " + id``, one
reading per event, verdicts on ``<prefix>.out.verdicts``; this package sends structured JSON
with ``source/id``, a device message's readings in one event, and verdicts on
``<prefix>.hub.arrival.verdict``. One encoding, one id rule and one verdict subject should win,
and the hub's late-fix re-check should become the live arrival processor's re-evaluation.
"""
