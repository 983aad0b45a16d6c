"""A loopback Hugging Face Hub serving one model repository, for download tests.

It answers, on 127.0.0.1, the requests `huggingface_hub.snapshot_download` makes, in the
Hub's formats (huggingface_hub's `hf_api.py` and `file_download.py` read them):

- `GET /api/models/{repo_id}[/revision/{revision}]`: the model info, whose `sha` is the
  commit the revision points to and `siblings` the files (what older huggingface_hub lists);
- `GET /api/models/{repo_id}/tree/{revision}?recursive=...`: the files with their size, Git
  blob id and, for LFS files, `lfs: {oid (sha256), size, pointerSize}` (what newer
  huggingface_hub lists);
- `HEAD` and `GET /{repo_id}/resolve/{revision}/{path}`: the file, with the headers
  `X-Repo-Commit`, `ETag` (quoted, the LFS sha256 or the blob id) and `Content-Length`.

A revision is `"main"` or the commit hash. An unknown repository, revision or file is a
404 with the Hub's `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`),
from which huggingface_hub raises its typed errors. Every request is recorded.
"""

import http.server
import json
import threading
from urllib.parse import unquote, urlsplit

from tests.hf_cache import commit_of, hub_file_ids, repo_files


class HubServer:
    """A running loopback Hub; build it with `serve_hub_repo`.

    Attributes:
        url: str. The endpoint, `http://127.0.0.1:<port>` (what `HF_ENDPOINT` takes).
        repo_id: str. The repository served.
        commit: str. Its one commit, which `main` points to.
        requests: list of `(method, path)` received, in order.
        fail_downloads: set of file paths whose `GET` answers 500 (a server error
            mid-download).
    """

    def __init__(self, repo_id, files, commit):
        self.repo_id = repo_id
        self.files = files
        self.commit = commit
        self.requests = []
        self.fail_downloads = set()
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def downloaded(self):
        """The file paths fetched with `GET .../resolve/...`, sorted."""
        prefix = f"/{self.repo_id}/resolve/"
        return sorted(
            path[len(prefix) :].split("/", 1)[1]
            for method, path in self.requests
            if method == "GET" and path.startswith(prefix)
        )

    def close(self):
        self._server.shutdown()
        self._server.server_close()

    # === Answers ===

    def _answer(self, method, path):
        """`(status, headers, body bytes)` for a request path (no query)."""
        api = f"/api/models/{self.repo_id}"
        resolve = f"/{self.repo_id}/resolve/"
        if path == api or path.startswith(api + "/revision/"):
            revision = path[len(api + "/revision/") :] if path != api else "main"
            if not self._known(revision):
                return self._error("RevisionNotFound")
            info = {
                "_id": "0" * 24,
                "id": self.repo_id,
                "modelId": self.repo_id,
                "sha": self.commit,
                "private": False,
                "siblings": [{"rfilename": name} for name in self.files],
            }
            return self._json(info)
        if path.startswith(api + "/tree/"):
            if not self._known(path[len(api + "/tree/") :]):
                return self._error("RevisionNotFound")
            return self._json([self._tree_entry(name) for name in self.files])
        if path.startswith(resolve) and "/" in path[len(resolve) :]:
            revision, name = path[len(resolve) :].split("/", 1)
            if not self._known(revision):
                return self._error("RevisionNotFound")
            if name not in self.files:
                return self._error("EntryNotFound")
            if method == "GET" and name in self.fail_downloads:
                return 500, {"Content-Type": "text/plain"}, b"Internal Error"
            content = self.files[name]
            headers = {
                "X-Repo-Commit": self.commit,
                "ETag": f'"{hub_file_ids(content, name)[2]}"',
                "Content-Type": "application/octet-stream",
            }
            return 200, headers, content
        return self._error("RepoNotFound")

    def _known(self, revision):
        return revision in ("main", self.commit)

    def _tree_entry(self, name):
        content = self.files[name]
        blob, lfs, _ = hub_file_ids(content, name)
        entry = {"type": "file", "oid": blob, "size": len(content), "path": name}
        if lfs is not None:
            entry["lfs"] = {"oid": lfs, "size": len(content), "pointerSize": 134}
        return entry

    @staticmethod
    def _json(value):
        return 200, {"Content-Type": "application/json"}, json.dumps(value).encode()

    def _error(self, code):
        body = json.dumps({"error": code}).encode()
        headers = {"Content-Type": "application/json", "X-Error-Code": code}
        if code != "RepoNotFound":
            headers["X-Repo-Commit"] = self.commit
        return 404, headers, body

    def _handler(self):
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self._reply("GET")

            def do_HEAD(self):
                self._reply("HEAD")

            def _reply(self, method):
                path = unquote(urlsplit(self.path).path)
                with hub._lock:
                    hub.requests.append((method, path))
                status, headers, body = hub._answer(method, path)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if method == "GET":
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler


def serve_hub_repo(repo_id, folder, commit=None):
    """Starts a loopback Hub serving the files under `folder` as the model `repo_id`.

    Args:
        repo_id: str. `"owner/name"`.
        folder: str or path. Every file under it (sub-folders included) is in the repo.
        commit: str or `None`. The commit hash `main` points to; `None` derives it from the
            content, as `tests.hf_cache.write_hf_cache` does.

    Returns:
        A `HubServer`; call `close()` when done.
    """
    files = repo_files(folder)
    return HubServer(repo_id, files, commit or commit_of(files))
