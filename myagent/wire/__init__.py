"""The wire both processes speak: pipe ops and the framed pipe.

Imported by the front process (``myagent.supervisor``) and by sandboxes
(``myagent.sandbox``), so that neither side imports the other.

* ``ops``: what each frame means, the binary event/message/open frames, exit codes
* ``pipe``: an asyncio protocol turning a stream socket into frame bodies in, frames out
"""
