"""The ``piivault`` command-line tool for operators, the DPO and auditors."""
