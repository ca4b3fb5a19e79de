"""The wire format: protobuf codec and the generated module; the only code that touches *_pb2."""
