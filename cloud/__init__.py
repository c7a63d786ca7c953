"""The reference cloud: AWS IoT / EMQX Fleets device-facing behaviour for local development.

One process runs the shadow service on a real MQTT broker (gmqtt, asyncio) and the HTTP API (a stdlib
``ThreadingHTTPServer``), over one store (peewee: SQLite by default, PostgreSQL when configured).
Start it with ``run.py cloud``; operate it with ``run.py shadow ...`` and ``run.py target ...``.
"""
