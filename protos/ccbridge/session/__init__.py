"""Generated protobuf and gRPC code for ccbridge (see protos/)."""
