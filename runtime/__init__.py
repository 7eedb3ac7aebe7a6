"""The machinery of criservice: no gRPC and no protobuf in here."""
