"""The work queue between the API and the batching workers, and its two backends.

- ``base``: the ``WorkQueue`` protocol both backends implement, ``Job``, ``Result``, ``Delivery``;
- ``memory``: ``InProcessQueue``, the embedded mode's queue (one process, no Redis);
- ``redis``: ``RedisStreamQueue``, Redis Streams (one stream per model, one consumer group);
- ``redis_replies``: the API's asyncio side of it (atomic enqueue, one reply listener per process);
- ``codec``: the wire format of jobs and results (JSON header plus raw array bytes, no pickle).

Import from the modules; this file imports nothing, so importing one backend never loads the other.
"""
