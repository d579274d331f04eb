"""Entry points for people: the `tickercast` CLI and the HTTP service."""
