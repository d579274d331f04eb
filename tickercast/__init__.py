"""Tickercast: daily prices in, evaluated LSTM forecasters out.

This package root is the library layer: pure logic and I/O adapters, no Prefect import
(only `tickercast.runcontext` touches a Prefect run). The Prefect tasks, flows, CLI/HTTP
service and deployments are mapped in from the repository folders tasks/, flows/, app/ and
deployments/ (see docs/ARCHITECTURE.md).
"""

# TensorFlow's shared libraries export their own libcurl's symbols. Loaded first, they
# shadow the libcurl-impersonate curl_cffi is built on (yfinance's HTTP session): every
# later Yahoo request then fails ("Impersonating chrome... is not supported"). A nightly
# process that retrained yesterday would ingest nothing today. Loading curl_cffi first,
# here (under 0.1 s), keeps each library on its own libcurl, in every order of use.
import curl_cffi.requests  # noqa: E402, F401
