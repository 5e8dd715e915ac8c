"""Data-subject requests: the DPO's workflow for access, portability, erasure, rectification and restriction."""
