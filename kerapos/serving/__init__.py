"""Serving kerapos exports with TF Serving: the model config and batching
parameters (`config`), and a REST / gRPC client (`client`); on the command
line `python -m kerapos.serving config|predict|status|metadata` (see
`kerapos/serving/__main__.py`)."""
