"""EmotionRecognitionService: until the SER model lands (issue 4) it answers health and UNIMPLEMENTED."""

from __future__ import annotations

import grpc

from emoloop.v1 import ser_pb2, ser_pb2_grpc


class SerServicer(ser_pb2_grpc.EmotionRecognitionServiceServicer):
    """The generated base class answers every model call with UNIMPLEMENTED."""

    service_name = ser_pb2.DESCRIPTOR.services_by_name["EmotionRecognitionService"].full_name

    def register(self, server: grpc.Server) -> None:
        ser_pb2_grpc.add_EmotionRecognitionServiceServicer_to_server(self, server)

    def load(self) -> None:
        """No model yet."""
