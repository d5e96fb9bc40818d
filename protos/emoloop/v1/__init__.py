"""Generated gRPC code for the emoloop.v1 protos (run `make protos`)."""
