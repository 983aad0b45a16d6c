"""A loopback HTTP server for download tests: the network a user's machine has, on 127.0.0.1.

Tests never reach the internet; a download path (Keras's `get_file`, tensorflow_hub's
resolver) is exercised against this server instead, with the real file formats.
"""

import http.server
import threading


def serve_bytes(payload):
    """Starts a server on 127.0.0.1 answering every GET with `payload`.

    Returns:
        The `http.server.HTTPServer` (its port is `server.server_address[1]`); call
        `shutdown()` and `server_close()` when done.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
