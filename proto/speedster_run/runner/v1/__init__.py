"""Runner protocol v1: generated code (scripts/gen_proto.sh) and the constants that go with it."""
