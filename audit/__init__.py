"""The audit domain: tamper-evident records of every operation on personal data.

- ``events``: what an event holds and its canonical byte form (the MAC input).
- ``log``: appending events to the MAC chain, inside the caller's transaction, with signed checkpoints.
- ``verify``: recomputing the chain and reporting the first bad sequence number.
- ``queries``: what auditors read.
"""
