"""The gRPC edge: servicers, the call guard (authentication, authorisation, error mapping), and the server.

This is the only package that imports ``grpc`` and the generated protobuf code.
"""
