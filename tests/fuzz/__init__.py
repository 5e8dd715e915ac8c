"""Coverage-guided fuzzing (atheris) of request decoding, validation and handling, for every RPC."""
