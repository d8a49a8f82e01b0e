"""The one atomic-write helper (clearclip_seg/atomic.py) and the pooch downloads of tools/prepare_data.py."""
import hashlib
import http.server
import os
import threading

import pytest

from clearclip_seg.atomic import atomic_path, atomic_write


def test_atomic_write_replaces_whole_files_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / 'sub' / 'record.json'
    atomic_write(path, 'first\n')
    assert path.read_text() == 'first\n' and oct(path.stat().st_mode & 0o777) == oct(0o644)
    atomic_write(path, b'second', mode=0o600)
    assert path.read_bytes() == b'second' and path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            with open(tmp, 'w') as f:
                f.write('half')
            raise RuntimeError('killed mid-write')
    assert path.read_bytes() == b'second' and sorted(os.listdir(tmp_path / 'sub')) == ['record.json']
    # two writers of one path hold different temporary names (keeping the suffix for PIL and friends)
    with atomic_path(path) as a, atomic_path(path) as b:
        assert a != b and os.path.dirname(a) == os.path.dirname(b) == str(tmp_path / 'sub')
        assert a.endswith('.json') and os.path.basename(a).startswith('.record.json.')
        for p, text in ((a, 'A'), (b, 'B')):
            with open(p, 'w') as f:
                f.write(text)
    assert path.read_text() == 'A' and sorted(os.listdir(tmp_path / 'sub')) == ['record.json']


class _Flaky(http.server.SimpleHTTPRequestHandler):
    """Serves the test's folder; the first request for ``flaky.bin`` fails with a 503."""
    failures = {'/flaky.bin': 1}

    def do_GET(self):
        if self.failures.get(self.path, 0) > 0:
            self.failures[self.path] -= 1
            self.send_error(503)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    folder = tmp_path / 'served'
    folder.mkdir()
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                            lambda *a, **k: _Flaky(*a, directory=str(folder), **k))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()


def test_downloads_retry_and_check_the_checksum(server, tmp_path):
    from clearclip_seg.data_prep import PrepareError, download
    folder, url = server
    payload = b'archive bytes' * 1000
    (folder / 'flaky.bin').write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()
    dest = tmp_path / 'dl' / 'flaky.bin'
    # the first try fails (503): retried, then verified and moved into place
    assert download(f'{url}/flaky.bin', dest, ('md5', md5), retries=1) == dest
    assert dest.read_bytes() == payload and os.listdir(dest.parent) == ['flaky.bin']
    # a checksum that does not match: an error naming the URL, nothing left behind
    other = tmp_path / 'dl2' / 'flaky.bin'
    with pytest.raises(PrepareError, match=f'{url}/flaky.bin: the download does not match its md5 checksum'):
        download(f'{url}/flaky.bin', other, ('md5', '0' * 32), retries=0)
    assert not other.exists() and os.listdir(other.parent) == []
    with pytest.raises(PrepareError, match='cannot download .*fetch it by hand'):
        download(f'{url}/missing.bin', tmp_path / 'dl3' / 'missing.bin', retries=0)
