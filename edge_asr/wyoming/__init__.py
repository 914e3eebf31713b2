"""Home Assistant's Wyoming protocol beside HTTP, on the ``wyoming`` library: speech-to-text,
text-to-speech and the LLM as a conversation agent, over the same ModelManager as the HTTP API.

``info`` (what ``describe`` answers: one Info for the whole unit), ``handler`` (one handler per
connection), ``server`` (the asyncio server in its own thread, who may connect).
"""
