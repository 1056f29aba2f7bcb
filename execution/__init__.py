"""Execution: the executor stage, venue clients (KuCoin spot, Binance spot and USD-M), paper venue, instrument
rules, signing, rate limits, risk and the order journal."""
