"""A local exchange for tests and dry runs: one aiohttp process on 127.0.0.1 speaking KuCoin spot, Binance spot,
Binance USD-M and MEXC spot v3 market-data protocols, so feed code runs against it unchanged but for its base URLs.

URL layout (P = port):

* REST base for KuCoin and Binance: ``http://127.0.0.1:P`` (paths do not clash), or per venue
  ``http://127.0.0.1:P/kucoin``, ``.../binance``, ``.../binance-usdm``; MEXC only ``http://127.0.0.1:P/mexc``
  (its ``/api/v3`` paths are Binance spot's at the root).
* KuCoin websocket: ``ws://127.0.0.1:P/kucoin/ws?token=T&connectId=C`` (returned by ``POST /api/v1/bullet-public``).
* Binance spot websocket base ``ws://127.0.0.1:P/binance`` (``/ws/<stream>``, ``/stream?streams=``).
* Binance USD-M websocket base ``ws://127.0.0.1:P/binance-usdm`` (``/public/...`` book streams,
  ``/market/...`` trades and klines).
* MEXC websocket ``ws://127.0.0.1:P/mexc/ws`` (JSON control frames, binary protobuf pushes).
* Order entry (signed, per venue account): KuCoin ``/api/v1/hf/*`` and the private topic on the KuCoin websocket
  (``orders_kucoin``); Binance ``/api/v3/order...``, WS-API ``/binance/ws-api/v3``; USD-M ``/fapi/v1/order...``,
  WS-API ``/binance-usdm/ws-fapi/v1``, user data ``/binance-usdm/private/ws/<listenKey>`` (``orders_binance``).
* ``GET /_sim/stats``, ``POST /_sim/fault`` (see ``faults``), ``GET /_sim/accounts`` (see ``accounts``),
  ``POST /_sim/go`` (start simulated time under ``--hold``).

Modules: ``market`` (instruments, books, candles, seeded generator), ``replay`` (recorded data as the event
source), ``clock`` (simulated time, timers), ``registry`` (connections, subscriptions, sending), ``faults``,
``kucoin``, ``binance``, ``mexc`` (venue routes and frames), ``accounts`` (balances, positions, matching, fees),
``orders_kucoin``, ``orders_binance`` (order entry and user streams), ``delivery`` (response vs. user-stream order,
delivery faults), ``engine`` (pacing loop), ``server`` (app, CLI).
Venue modules expose ``add_routes(app)`` and ``on_event(event)`` and push through the shared ``Registry``, so
order entry and user-data streams can be added beside the market-data routes.
"""
