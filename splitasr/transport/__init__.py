"""The edge and the cloud as two programs: the gRPC protocol (``splitasr.proto``, package
``splitasr.v1``; generated ``splitasr_pb2*.py`` committed, regenerate with
``scripts/gen_proto.sh``), the server (:mod:`.server`) and the clients (:mod:`.client`)."""
