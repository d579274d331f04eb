"""Tickercast: daily prices in, evaluated LSTM forecasters out.

This package root is the library layer: pure logic and I/O adapters, no Prefect import
(only `tickercast.runcontext` touches a Prefect run). The Prefect tasks, flows, CLI/HTTP
service and deployments are mapped in from the repository folders tasks/, flows/, app/ and
deployments/ (see docs/ARCHITECTURE.md).
"""
