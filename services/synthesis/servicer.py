"""SynthesisService: until the synthesis engines land (issue 3) it answers health and UNIMPLEMENTED."""

from __future__ import annotations

import grpc

from emoloop.v1 import synthesis_pb2, synthesis_pb2_grpc


class SynthesisServicer(synthesis_pb2_grpc.SynthesisServiceServicer):
    """The generated base class answers every model call with UNIMPLEMENTED."""

    service_name = synthesis_pb2.DESCRIPTOR.services_by_name["SynthesisService"].full_name

    def register(self, server: grpc.Server) -> None:
        synthesis_pb2_grpc.add_SynthesisServiceServicer_to_server(self, server)

    def load(self) -> None:
        """No engine yet."""
