"""A local exchange for tests and dry runs: one aiohttp process on 127.0.0.1 speaking KuCoin spot, Binance spot and
Binance USD-M market-data protocols, so feed code runs against it unchanged but for its base URLs.

URL layout (P = port):

* REST base for every venue: ``http://127.0.0.1:P`` (paths do not clash), or per venue
  ``http://127.0.0.1:P/kucoin``, ``.../binance``, ``.../binance-usdm``.
* KuCoin websocket: ``ws://127.0.0.1:P/kucoin/ws?token=T&connectId=C`` (returned by ``POST /api/v1/bullet-public``).
* Binance spot websocket base ``ws://127.0.0.1:P/binance`` (``/ws/<stream>``, ``/stream?streams=``).
* Binance USD-M websocket base ``ws://127.0.0.1:P/binance-usdm`` (``/public/...`` book streams,
  ``/market/...`` trades and klines).
* ``GET /_sim/stats``, ``POST /_sim/fault`` (see ``faults``).

Modules: ``market`` (instruments, books, candles, seeded generator), ``replay`` (recorded data as the event
source), ``clock`` (simulated time, timers), ``registry`` (connections, subscriptions, sending), ``faults``,
``kucoin``, ``binance`` (venue routes and frames), ``engine`` (pacing loop), ``server`` (app, CLI).
Venue modules expose ``add_routes(app)`` and ``on_event(event)`` and push through the shared ``Registry``, so
order entry and user-data streams can be added beside the market-data routes.
"""
