"""Stores: the contract (base) and its implementations."""
