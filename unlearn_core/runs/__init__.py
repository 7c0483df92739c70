"""Runs: the registry of what was done (:mod:`.registry`) and how it runs in the background
(:mod:`.jobs`).

Kept free of torch at import time, so ``runs list`` and job start-up stay fast.
"""
