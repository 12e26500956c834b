"""Runner protocol v1: generated code (scripts/gen_proto.sh) and the constants both ends agree on."""

# "major.minor": a runner answers Describe with it; the orchestrator refuses another major version.
PROTOCOL_VERSION = "1.1"  # 1.1: DeleteUpload; SaveArtifactRequest.format and .example
SERVICE_NAME = "speedster_run.runner.v1.RunnerService"

# gRPC's 4 MiB default is too small for real tensors; 512 MiB bounds one message (a batch of images, a calibration
# set). Model files never travel in one message: they are streamed in CHUNK_BYTES pieces.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024

GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
