"""Connector service: one contract (base.py), one adapter per CCaaS (adapters/)."""
