"""ZeroMQ CURVE security for the published frames and the control socket.

A CURVE server (the PUB output, the control REP socket) holds a secret key and accepts only
clients whose public key is in an allow-list folder: pyzmq's ZAP authenticator runs on a thread
and asks :class:`_AllowList` about every handshake, so an unknown client key is refused and logged.
(A CURVE server *without* an authenticator would accept any client key.) Key pairs are made by
``streamfuse keys`` (:func:`generate_keys`): ``NAME.key`` (public, safe to share) and
``NAME.key_secret`` (keep private).
"""

from __future__ import annotations

import logging
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from streamfuse.config import CurveConfig
from streamfuse.errors import ConfigError

log = logging.getLogger(__name__)


def generate_keys(folder: str | Path, name: str) -> tuple[Path, Path]:
    """Create ``folder/NAME.key`` and ``folder/NAME.key_secret``; refuses to overwrite existing keys."""
    folder = Path(folder)
    if not name or Path(name).name != name or name.startswith("."):
        raise ConfigError(f"--name {name!r}: expected a plain file name (no folders, not hidden), e.g. server")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: is a file; give the folder the keys go into")
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    if public.exists() or secret.exists():
        raise ConfigError(f"{public if public.exists() else secret}: a key with this name exists; "
                          "choose another name or delete the old pair first")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot create the key folder ({exc.strerror})") from None
    made_public, made_secret = zmq.auth.create_certificates(folder, name)
    Path(made_secret).chmod(0o600)
    return Path(made_public), Path(made_secret)


def load_key(path: str | Path, *, secret: bool, what: str) -> tuple[bytes, bytes | None]:
    """``(public, secret)`` from a key file made by ``streamfuse keys``; ``what`` names the setting in errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what}: no key file at {path}; make one with `streamfuse keys FOLDER --name NAME`")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{what}: {path} is not a ZeroMQ CURVE key file ({exc})") from None
    if secret and secret_key is None:
        raise ConfigError(f"{what}: {path} holds only a public key; give the .key_secret file")
    return public, secret_key


class _AllowList:
    """ZAP credentials provider: allow the public keys found in a folder, log every refusal."""

    def __init__(self, folder: Path, socket_name: str) -> None:
        try:
            self.keys = set(zmq.auth.load_certificates(folder))
        except (ValueError, OSError) as exc:  # one file that is no key file
            raise ConfigError(f"{socket_name}.authorized_keys: {exc}; keep only the clients' public .key files "
                              "(from `streamfuse keys`) in that folder") from None
        self.socket_name = socket_name

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = key in self.keys
        if not allowed:
            log.warning("%s: refused a client with an unknown CURVE key %s (handshake failed)",
                        self.socket_name, key.decode(errors="replace"))
        return allowed


def secure_server(socket: zmq.Socket, curve: CurveConfig, *, what: str) -> ThreadAuthenticator | None:
    """Make ``socket`` (not yet bound) a CURVE server that only admits the configured client keys.

    Returns the running authenticator (stop it when the socket closes), or None when ``curve`` is off.
    ``what`` names the config section in errors and logs (``control.curve``, ``sinks.1.curve``).
    """
    if not curve.enabled:
        return None
    public, secret = load_key(curve.server_secret_key, secret=True, what=f"{what}.server_secret_key")
    folder = Path(curve.authorized_keys)
    if not folder.is_dir():
        raise ConfigError(f"{what}.authorized_keys: {folder} is not a folder (put the clients' .key files there)")
    allow_list = _AllowList(folder, what)
    if not allow_list.keys:
        raise ConfigError(f"{what}.authorized_keys: {folder} holds no public .key files, so no client could connect")
    authenticator = ThreadAuthenticator(socket.context, log=logging.getLogger("streamfuse.security.zap"))
    authenticator.start()
    authenticator.configure_curve_callback("*", credentials_provider=allow_list)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return authenticator


def secure_client(socket: zmq.Socket, client_secret_key: str | Path, server_public_key: str | Path) -> None:
    """Make ``socket`` (not yet connected) a CURVE client of the server whose public key file is given."""
    public, secret = load_key(client_secret_key, secret=True, what="--client-key")
    server_public, _ = load_key(server_public_key, secret=False, what="--server-key")
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = server_public
