"""Tickercast's pure logic: plain functions, with thin Prefect task wrappers beside them."""
