"""OCI distribution client: resolve a reference to a platform manifest, fetch its config and blobs.

Every manifest and blob is checked against its digest; blobs are verified while
they stream so a consumer never sees a clean end on bad data. Mirrors are tried
before the upstream registry and never receive the pull's credentials (those
belong to the upstream; containerd behaves the same way).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import ipaddress
import json
import os
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from runtime.images import reference as refs
from runtime.images.auth import (BASIC_LIFETIME, DEFAULT_TOKEN_LIFETIME, AuthCache, Challenge,
                                 ChallengeError, Credentials, basic_authorization,
                                 parse_token_response, parse_www_authenticate)
from runtime.images.manifests import (INDEX_TYPES, MANIFEST_ACCEPT, MANIFEST_TYPES, OCI_MANIFEST, Descriptor,
                                      Platform, image_descriptors, parse_manifest, select_manifest)
from runtime.images.reference import Reference
from runtime.images.registry_errors import (AuthError, ConnectionFailed, DigestMismatch, NotFoundError,
                                            ProgressTimeout, RegistryError, UnsupportedManifest)

# The client's public surface, with the model and errors it answers in.
__all__ = [
    "AuthError", "Credentials", "ConnectionFailed", "Descriptor", "DigestMismatch", "Endpoint",
    "NotFoundError", "Platform", "ProgressTimeout", "RegistryClient", "RegistryError",
    "ResolvedImage", "UnsupportedManifest", "parse_manifest", "image_descriptors", "select_manifest",
]

DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = (DOCKER_HUB, "index.docker.io", DOCKER_HUB_ENDPOINT)

MAX_MANIFEST_SIZE = 4 << 20     # what containerd allows too; a bigger "manifest" is an attack
MAX_CONFIG_SIZE = 32 << 20
MAX_ERROR_BODY = 16 << 10
MAX_TOKEN_BODY = 1 << 20
BLOB_CHUNK_SIZE = 1 << 20       # large chunks: fewer hash updates and writes per layer
MAX_REDIRECTS = 10
CONNECT_TIMEOUT = 10.0
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class RegistryConfigLike(Protocol):
    @property
    def mirrors(self) -> Sequence[str]: ...
    @property
    def insecure(self) -> bool: ...


@dataclass(frozen=True)
class Endpoint:
    url: str          # scheme://host[:port][/prefix], without a trailing slash
    host: str         # the registry host for auth scoping and messages
    mirror: bool
    insecure: bool    # skip TLS verification

    @property
    def label(self) -> str:
        return f"{'mirror' if self.mirror else 'registry'} {self.host}"


@dataclass(frozen=True)
class ResolvedImage:
    reference: Reference
    endpoint: Endpoint
    manifest_digest: str          # the platform-specific manifest
    index_digest: str | None      # the index / manifest list the tag pointed to, if any
    manifest: bytes
    config: Descriptor
    layers: tuple[Descriptor, ...]
    manifest_media_type: str = OCI_MANIFEST

    @property
    def repo_digest(self) -> str:
        """`name@digest` of what the reference points to: the index if there is one (as the CRI reports)."""
        return self.reference.with_digest(self.index_digest or self.manifest_digest)


def _digest_of(body: bytes, algorithm: str) -> str:
    return f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"


def _registry_error_detail(body: bytes) -> str:
    """`CODE: message` from a distribution error body, or the start of the body."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body[:200].decode("utf-8", "replace").strip()
    errors = data.get("errors") if isinstance(data, dict) else None
    if isinstance(errors, list):
        parts = [f"{e.get('code', '?')}: {e.get('message', '')}".rstrip(": ")
                 for e in errors if isinstance(e, dict)]
        return "; ".join(parts)
    return body[:200].decode("utf-8", "replace").strip()


def _host_of(domain: str) -> str:
    if domain.startswith("["):
        return domain[1:domain.index("]")]
    host, colon, port = domain.rpartition(":")
    return host if colon and port.isdigit() else domain


def _is_loopback(domain: str) -> bool:
    host = _host_of(domain)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what caused it, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        yield current
        seen.add(id(current))
        current = current.__cause__ or current.__context__


def _find_ssl_verify_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    return next((c for c in _causes(exc) if isinstance(c, ssl.SSLCertVerificationError)), None)


# What each kind of httpx transport error means, in words: a client reads these, and a
# library's class name is no message.
_TRANSPORT_ERRORS: tuple[tuple[type[httpx.TransportError], str], ...] = (
    (httpx.ConnectTimeout, "connecting timed out"), (httpx.ConnectError, "cannot connect"),
    (httpx.ReadTimeout, "reading timed out"), (httpx.WriteTimeout, "writing timed out"),
    (httpx.PoolTimeout, "no connection free in time"), (httpx.ReadError, "reading failed"),
    (httpx.WriteError, "writing failed"), (httpx.RemoteProtocolError, "the registry broke the HTTP protocol"),
    (httpx.ProxyError, "the proxy refused"), (httpx.UnsupportedProtocol, "unsupported protocol"),
)


def _describe_transport_error(exc: BaseException) -> str:
    """`cannot connect: All connection attempts failed (Connection refused)`: what failed,
    httpx's words and the OS's."""
    kind = next((words for cls, words in _TRANSPORT_ERRORS if isinstance(exc, cls)), "transport failure")
    text = f"{kind}: {exc}" if str(exc) else kind
    errnos = [c.errno for c in _causes(exc) if isinstance(c, OSError) and c.errno]
    if errnos:
        text += f" ({os.strerror(errnos[-1])})"
    return text


# The client ------------------------------------------------------------------


class RegistryClient:
    def __init__(self, registries: Mapping[str, RegistryConfigLike], *, progress_timeout: float = 60.0,
                 platform: Platform | None = None, user_agent: str = "criservice/0.1.0") -> None:
        self._registries = dict(registries)
        self.progress_timeout = progress_timeout
        self.platform = platform or Platform.host()
        self._user_agent = user_agent
        self._clients: dict[bool, httpx.AsyncClient] = {}
        self._auth = AuthCache()

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # Endpoints ---------------------------------------------------------------

    def _config_for(self, host: str) -> RegistryConfigLike | None:
        names = _DOCKER_HUB_ALIASES if host in _DOCKER_HUB_ALIASES else (host,)
        return next((self._registries[n] for n in names if n in self._registries), None)

    def _mirror_endpoint(self, url: str) -> Endpoint:
        parts = urllib.parse.urlsplit(url)
        path = parts.path.rstrip("/").removesuffix("/v2")
        config = self._config_for(parts.netloc)
        return Endpoint(f"{parts.scheme}://{parts.netloc}{path}", parts.netloc, True,
                        bool(config and config.insecure))

    def endpoints(self, ref: Reference) -> list[Endpoint]:
        """Mirrors in configured order, then the upstream registry.

        An insecure upstream is tried over https without verification, then over
        http; a loopback one (like containerd's localhost rule) over verified
        https, then http."""
        config = self._config_for(ref.domain)
        out = [self._mirror_endpoint(m) for m in (config.mirrors if config else ())]
        host = DOCKER_HUB_ENDPOINT if ref.domain == DOCKER_HUB else ref.domain
        if config is not None and config.insecure:
            out += [Endpoint(f"https://{host}", ref.domain, False, True),
                    Endpoint(f"http://{host}", ref.domain, False, True)]
        elif _is_loopback(ref.domain):
            out += [Endpoint(f"https://{host}", ref.domain, False, False),
                    Endpoint(f"http://{host}", ref.domain, False, False)]
        else:
            out.append(Endpoint(f"https://{host}", ref.domain, False, False))
        return out

    # Resolving ---------------------------------------------------------------

    async def resolve(self, ref: Reference, creds: Credentials | None = None) -> ResolvedImage:
        """Find the platform manifest of `ref`, trying each endpoint in order.

        A mirror's failure of any kind falls through to the next endpoint; the
        upstream's https failing to connect (not a certificate problem) falls
        through to its http twin; any other upstream answer is final."""
        attempts: list[tuple[Endpoint, RegistryError]] = []
        for endpoint in self.endpoints(ref):
            try:
                return await self._resolve_at(endpoint, ref, self._creds_for(endpoint, creds))
            except RegistryError as e:
                attempts.append((endpoint, e))
                if not _falls_through(endpoint, e):
                    break
        primary = _primary_error(attempts)
        if len(attempts) == 1:
            raise primary
        # The upstream's https twin failing to connect is noise once its http twin answered.
        others = "; ".join(str(e) for ep, e in attempts if e is not primary
                           and (ep.mirror or not isinstance(e, ConnectionFailed)))
        if not others:
            raise primary
        combined = copy.copy(primary)
        combined.args = (f"{primary} (also tried: {others})",)
        raise combined from primary

    @staticmethod
    def _creds_for(endpoint: Endpoint, creds: Credentials | None) -> Credentials | None:
        # The pull's credentials are for the upstream registry; a mirror must not see them.
        return None if endpoint.mirror or creds is None or creds.empty else creds

    async def _resolve_at(self, ep: Endpoint, ref: Reference, creds: Credentials | None) -> ResolvedImage:
        where = f"{ref} at {ep.label}"
        target = ref.digest or ref.tag
        assert target is not None  # parse() always sets a tag or a digest
        body, digest, media_type, data = await self._fetch_manifest(ep, ref, creds, target, where)
        index_digest = None
        if media_type in INDEX_TYPES:
            index_digest = digest
            entry = select_manifest(data, self.platform, where)
            body, digest, media_type, data = await self._fetch_manifest(ep, ref, creds, entry.digest, where)
            if media_type not in MANIFEST_TYPES:
                raise UnsupportedManifest(f"{where}: index entry {entry.digest} is a {media_type}, "
                                          "not an image manifest")
        config, layers = image_descriptors(data, f"{where} (manifest {digest})")
        return ResolvedImage(ref, ep, digest, index_digest, body, config, layers, media_type)

    async def _fetch_manifest(self, ep: Endpoint, ref: Reference, creds: Credentials | None,
                              target: str, where: str) -> tuple[bytes, str, str, dict[str, Any]]:
        """(body, digest, media type, JSON) of the manifest `target` (a tag or a digest)."""
        path = f"/v2/{ref.path}/manifests/{target}"
        response = await self._open(ep, ref, creds, path, {"Accept": MANIFEST_ACCEPT})
        try:
            if response.status_code == 404:
                shown = f"{ref.name}@{target}" if ":" in target else f"{ref.name}:{target}"
                raise await self._status_error(NotFoundError, ep, response, f"image {shown} not found: ")
            if not response.is_success:
                raise await self._status_error(RegistryError, ep, response, f"{where}: ")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > MAX_MANIFEST_SIZE:
                raise UnsupportedManifest(f"{where}: manifest {target} is {declared} bytes, "
                                          f"more than the {MAX_MANIFEST_SIZE} allowed")
            with self._transport_errors(ep, response.request):
                body = await _read_capped(response, MAX_MANIFEST_SIZE + 1, raw=False)
            content_type = response.headers.get("content-type", "")
            header_digest = response.headers.get("docker-content-digest", "")
        finally:
            await response.aclose()
        if len(body) > MAX_MANIFEST_SIZE:
            raise UnsupportedManifest(f"{where}: manifest {target} is larger than {MAX_MANIFEST_SIZE} bytes")
        digest = _verify_manifest_digest(ep, where, target, body, header_digest)
        media_type, data = parse_manifest(body, content_type, f"{where} (manifest {digest})")
        return body, digest, media_type, data

    # Blobs -------------------------------------------------------------------

    async def fetch_config(self, image: ResolvedImage, creds: Credentials | None = None) -> bytes:
        """The image config, verified against its descriptor."""
        if image.config.size > MAX_CONFIG_SIZE:
            raise UnsupportedManifest(f"{image.reference} at {image.endpoint.label}: config is "
                                      f"{image.config.size} bytes, more than the {MAX_CONFIG_SIZE} allowed")
        parts: list[bytes] = []
        async with self.blob_stream(image, image.config, creds) as chunks:
            async for chunk in chunks:
                parts.append(chunk)
        return b"".join(parts)

    @contextlib.asynccontextmanager
    async def blob_stream(self, image: ResolvedImage, desc: Descriptor,
                          creds: Credentials | None = None) -> AsyncIterator[AsyncIterator[bytes]]:
        """The blob's bytes in large chunks, verified while they stream.

        A wrong size or digest raises from the iterator instead of its normal end."""
        ep, ref = image.endpoint, image.reference
        path = f"/v2/{ref.path}/blobs/{desc.digest}"
        # identity: we must hash the stored bytes, not a transfer-encoded form of them.
        response = await self._open(ep, ref, self._creds_for(ep, creds), path,
                                    {"Accept-Encoding": "identity"})
        try:
            if response.status_code == 404:
                raise await self._status_error(NotFoundError, ep, response,
                                               f"blob {desc.digest} of {ref} not found: ")
            if not response.is_success:
                raise await self._status_error(RegistryError, ep, response, f"blob {desc.digest} of {ref}: ")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) != desc.size:
                raise DigestMismatch(f"{ep.label}: blob {desc.digest} of {ref} is {declared} bytes "
                                     f"but the manifest says {desc.size}", host=ep.host)
            yield self._verified_chunks(ep, ref, desc, response)
        finally:
            await response.aclose()

    async def _verified_chunks(self, ep: Endpoint, ref: Reference, desc: Descriptor,
                               response: httpx.Response) -> AsyncIterator[bytes]:
        what = f"{ep.label}: blob {desc.digest} of {ref}"
        hasher = hashlib.new(desc.digest.partition(":")[0])
        received = 0
        chunks = response.aiter_raw(BLOB_CHUNK_SIZE)
        while True:
            with self._blob_read_errors(ep, what, response, desc.size):
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
            received += len(chunk)
            if received > desc.size:
                raise DigestMismatch(f"{what}: more than the {desc.size} bytes the manifest declares",
                                     host=ep.host)
            hasher.update(chunk)
            yield chunk
        if received < desc.size:
            raise RegistryError(f"{what}: truncated blob: received {received} of {desc.size} bytes",
                                host=ep.host)
        actual = f"{desc.digest.partition(':')[0]}:{hasher.hexdigest()}"
        if actual != desc.digest:
            raise DigestMismatch(f"{what}: content has digest {actual}", host=ep.host)

    @contextlib.contextmanager
    def _blob_read_errors(self, ep: Endpoint, what: str, response: httpx.Response,
                          size: int) -> Iterator[None]:
        # The bytes that came off the wire, not those passed on: aiter_raw holds back up to a
        # whole chunk, so a blob that stalls in its first megabyte would say "0 of N bytes".
        try:
            yield
        except httpx.ReadTimeout as e:
            raise ProgressTimeout(f"{what}: no data for {self.progress_timeout:g}s after "
                                  f"{response.num_bytes_downloaded} of {size} bytes", host=ep.host) from e
        except (httpx.RemoteProtocolError, httpx.ReadError) as e:
            raise RegistryError(f"{what}: truncated blob: the connection ended after "
                                f"{response.num_bytes_downloaded} of {size} bytes "
                                f"({_describe_transport_error(e)})", host=ep.host) from e
        except httpx.TransportError as e:
            raise RegistryError(f"{what}: reading failed after {response.num_bytes_downloaded} of {size} "
                                f"bytes ({_describe_transport_error(e)})", host=ep.host) from e

    # HTTP with authentication ------------------------------------------------

    def _client(self, verify: bool) -> httpx.AsyncClient:
        client = self._clients.get(verify)
        if client is None:
            timeout = self.progress_timeout
            client = httpx.AsyncClient(
                # The system trust store, like every other client on the host (not certifi's).
                verify=ssl.create_default_context() if verify else False,
                http1=True, http2=False,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
                timeout=httpx.Timeout(connect=CONNECT_TIMEOUT, read=timeout, write=timeout, pool=timeout),
                follow_redirects=False,
                headers={"User-Agent": self._user_agent})
            self._clients[verify] = client
        return client

    async def _open(self, ep: Endpoint, ref: Reference, creds: Credentials | None, path: str,
                    headers: Mapping[str, str]) -> httpx.Response:
        """A streamed GET of `path` on `ep`, authenticating on a 401; the caller closes it."""
        scope = f"repository:{ref.path}:pull"
        key = (urllib.parse.urlsplit(ep.url).netloc, scope, creds)
        authorization = self._auth.get(key)
        response = await self._get_following(ep, ep.url + path, headers, authorization)
        if response.status_code == 401:
            challenge_header = response.headers.get("www-authenticate", "")
            status_text = await self._status_text(response)
            await response.aclose()
            self._auth.drop(key)
            authorization, lifetime = await self._authorize(ep, ref, creds, challenge_header, scope,
                                                            status_text)
            response = await self._get_following(ep, ep.url + path, headers, authorization)
            if response.status_code not in (401, 403):
                self._auth.put(key, authorization, lifetime)
        if response.status_code in (401, 403) and authorization is not None:
            self._auth.drop(key)
            status_text = await self._status_text(response)
            await response.aclose()
            if creds is None:
                raise AuthError(f"{ep.label} requires authentication and no credentials were given: "
                                f"{status_text}", host=ep.host, status=response.status_code)
            raise AuthError(f"{ep.label} refused the credentials: {status_text}",
                            host=ep.host, status=response.status_code)
        return response

    async def _get_following(self, ep: Endpoint, url: str, headers: Mapping[str, str],
                             authorization: str | None) -> httpx.Response:
        """GET, following redirects; the Authorization header never leaves the registry's origin."""
        client = self._client(verify=not ep.insecure)
        origin = _origin(httpx.URL(url))
        current = httpx.URL(url)
        for _ in range(MAX_REDIRECTS + 1):
            request_headers = dict(headers)
            if authorization is not None and _origin(current) == origin:
                request_headers["Authorization"] = authorization
            request = client.build_request("GET", current, headers=request_headers)
            with self._transport_errors(ep, request):
                response = await client.send(request, stream=True)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECT_STATUSES or not location:
                return response
            await response.aclose()
            current = response.url.join(location)
        raise RegistryError(f"{ep.label}: more than {MAX_REDIRECTS} redirects for GET "
                            f"{httpx.URL(url).path}", host=ep.host)

    @contextlib.contextmanager
    def _transport_errors(self, ep: Endpoint, request: httpx.Request) -> Iterator[None]:
        where = f"{ep.label}: {request.method} {_describe_url(ep, request.url)}"
        try:
            yield
        except httpx.ConnectTimeout as e:
            raise ConnectionFailed(f"{where}: connecting timed out after {CONNECT_TIMEOUT:g}s",
                                   host=ep.host) from e
        except httpx.PoolTimeout as e:
            raise RegistryError(f"{where}: no free connection for {self.progress_timeout:g}s",
                                host=ep.host) from e
        except httpx.TimeoutException as e:
            raise ProgressTimeout(f"{where}: no data for {self.progress_timeout:g}s",
                                  host=ep.host) from e
        except httpx.TransportError as e:
            verify_error = _find_ssl_verify_error(e)
            if verify_error is not None:
                raise ConnectionFailed(
                    f"{where}: TLS certificate verification failed ({verify_error.verify_message}); "
                    f"if {ep.host} uses a self-signed certificate, set insecure = true for it "
                    "under [image.registries]", host=ep.host, tls_verify=True) from e
            raise ConnectionFailed(f"{where}: {_describe_transport_error(e)}", host=ep.host) from e

    async def _status_text(self, response: httpx.Response) -> str:
        """`HTTP 404 Not Found (CODE: message)` for messages."""
        text = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        try:
            body = await _read_capped(response, MAX_ERROR_BODY, raw=False)
        except httpx.HTTPError as e:
            return f"{text} (reading the error body failed: {type(e).__name__})"
        detail = _registry_error_detail(body)
        return f"{text} ({detail})" if detail else text

    async def _status_error(self, cls: type[RegistryError], ep: Endpoint, response: httpx.Response,
                            prefix: str) -> RegistryError:
        status_text = await self._status_text(response)
        return cls(f"{prefix}{ep.label} answered {status_text} to GET "
                   f"{_describe_url(ep, response.request.url)}", host=ep.host, status=response.status_code)

    async def _authorize(self, ep: Endpoint, ref: Reference, creds: Credentials | None,
                         challenge_header: str, scope: str, status_text: str) -> tuple[str, float]:
        """The Authorization header answering a 401's challenge, and how long it may be cached."""
        try:
            challenges = parse_www_authenticate(challenge_header)
        except ChallengeError as e:
            raise AuthError(f"{ep.label} answered {status_text} with an unparsable challenge: {e}",
                            host=ep.host, status=401) from e
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if bearer is not None:
            if creds is not None and creds.registry_token:
                return f"Bearer {creds.registry_token}", DEFAULT_TOKEN_LIFETIME
            token, lifetime = await self._fetch_token(ep, bearer, creds, scope)
            return f"Bearer {token}", lifetime
        if basic is not None:
            user_password = self._user_password(ep, creds)
            if user_password is None:
                raise AuthError(f"{ep.label} requires authentication (Basic) and no credentials "
                                f"were given: {status_text}", host=ep.host, status=401)
            return basic_authorization(*user_password), BASIC_LIFETIME
        raise AuthError(f"{ep.label} answered {status_text} with an unsupported authentication "
                        f"challenge {challenge_header!r}", host=ep.host, status=401)

    @staticmethod
    def _user_password(ep: Endpoint, creds: Credentials | None) -> tuple[str, str] | None:
        if creds is None:
            return None
        try:
            return creds.user_password()
        except ValueError as e:
            raise AuthError(f"credentials for {ep.label}: {e}", host=ep.host) from e

    async def _fetch_token(self, ep: Endpoint, challenge: Challenge, creds: Credentials | None,
                           scope: str) -> tuple[str, float]:
        try:
            realm = httpx.URL(challenge.realm) if challenge.realm else None
        except httpx.InvalidURL as e:
            raise AuthError(f"{ep.label} asked for a bearer token from an invalid realm "
                            f"{challenge.realm!r}: {e}", host=ep.host, status=401) from e
        if realm is None or realm.scheme not in ("http", "https") or not realm.host:
            raise AuthError(f"{ep.label} asked for a bearer token without a usable realm "
                            f"({challenge.realm!r})", host=ep.host, status=401)
        scopes = [scope]
        if challenge.params.get("scope") and challenge.params["scope"] != scope:
            scopes.append(challenge.params["scope"])
        service = challenge.params.get("service", "")
        if creds is not None and creds.identity_token:
            response = await self._token_request(ep, realm, "POST", service, scopes, creds)
            if response.status_code in (404, 405):
                # Token servers without OAuth2 POST: the identity token goes as a password.
                await response.aclose()
                basic = (creds.username, creds.identity_token) if creds.username else None
                response = await self._token_request(ep, realm, "GET", service, scopes, creds, basic)
        else:
            response = await self._token_request(ep, realm, "GET", service, scopes, creds,
                                                 self._user_password(ep, creds))
        try:
            return await self._token_from(ep, realm, creds, response)
        finally:
            await response.aclose()

    async def _token_request(self, ep: Endpoint, realm: httpx.URL, method: str, service: str,
                             scopes: list[str], creds: Credentials | None,
                             basic: tuple[str, str] | None = None) -> httpx.Response:
        client = self._client(verify=not ep.insecure)
        headers: dict[str, str] = {}
        if method == "POST":
            assert creds is not None
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "service": service, "scope": " ".join(scopes), "client_id": "criservice"}
            request = client.build_request("POST", realm, data=form)
        else:
            params: list[tuple[str, str]] = [("service", service)] if service else []
            params += [("scope", s) for s in scopes]
            if basic is not None:
                headers["Authorization"] = basic_authorization(*basic)
                params.append(("account", basic[0]))
            request = client.build_request("GET", realm.copy_merge_params(tuple(params)), headers=headers)
        with self._transport_errors(ep, request):
            # httpx drops Authorization itself when a redirect leaves the realm's origin.
            return await client.send(request, stream=True, follow_redirects=True)

    async def _token_from(self, ep: Endpoint, realm: httpx.URL, creds: Credentials | None,
                          response: httpx.Response) -> tuple[str, float]:
        server = f"token server {realm.scheme}://{realm.netloc.decode()}{realm.path}"
        if response.status_code in (401, 403):
            status_text = await self._status_text(response)
            if creds is None:
                raise AuthError(f"{ep.label} requires authentication and no credentials were given: "
                                f"{server} answered {status_text}", host=ep.host, status=response.status_code)
            raise AuthError(f"{ep.label} refused the credentials: {server} answered {status_text}",
                            host=ep.host, status=response.status_code)
        if not response.is_success:
            status_text = await self._status_text(response)
            raise RegistryError(f"{ep.label}: {server} answered {status_text}",
                                host=ep.host, status=response.status_code)
        with self._transport_errors(ep, response.request):
            body = await _read_capped(response, MAX_TOKEN_BODY, raw=False)
        try:
            token = parse_token_response(body)
        except ValueError as e:
            raise RegistryError(f"{ep.label}: {server}: {e}", host=ep.host) from e
        return token.value, token.lifetime


def _falls_through(ep: Endpoint, error: RegistryError) -> bool:
    if ep.mirror:
        return True
    return isinstance(error, ConnectionFailed) and not error.tls_verify


def _primary_error(attempts: list[tuple[Endpoint, RegistryError]]) -> RegistryError:
    """The upstream's answer; an http twin's answer beats the https twin failing to connect."""
    upstream = [e for ep, e in attempts if not ep.mirror]
    answered = [e for e in upstream if not isinstance(e, ConnectionFailed) or e.tls_verify]
    if answered:
        return answered[-1]
    return upstream[0] if upstream else attempts[-1][1]


def _describe_url(ep: Endpoint, url: httpx.URL) -> str:
    """The path on the registry itself; another host's (blob storage) URL without its query,
    which may hold secrets."""
    if _origin(url) == _origin(httpx.URL(ep.url)):
        return url.path
    return f"{url.scheme}://{url.netloc.decode()}{url.path}"


def _verify_manifest_digest(ep: Endpoint, where: str, target: str, body: bytes, header_digest: str) -> str:
    """The manifest's digest: checked against `target` if that is a digest, else computed (and
    checked against Docker-Content-Digest when the registry sent one)."""
    if refs.validate_digest(target) is None:
        actual = _digest_of(body, target.partition(":")[0])
        if actual != target:
            raise DigestMismatch(f"{where}: manifest {target} has digest {actual}", host=ep.host)
        return target
    computed = _digest_of(body, "sha256")
    if header_digest and refs.validate_digest(header_digest) is None:
        if _digest_of(body, header_digest.partition(":")[0]) != header_digest:
            raise DigestMismatch(f"{where}: manifest has digest {computed} but the registry "
                                 f"says Docker-Content-Digest {header_digest}", host=ep.host)
    return computed


async def _read_capped(response: httpx.Response, limit: int, *, raw: bool) -> bytes:
    """At most `limit` bytes of the body: a hostile server can't make us buffer gigabytes."""
    parts: list[bytes] = []
    total = 0
    chunks = response.aiter_raw() if raw else response.aiter_bytes()
    async for chunk in chunks:
        parts.append(chunk)
        total += len(chunk)
        if total >= limit:
            break
    return b"".join(parts)[:limit]
