"""piivault: the service side of the privacy-compliance data vault.

Domain code in this package never imports ``grpc`` or protobuf; only ``vault.api`` does (a test walks the imports).
"""
