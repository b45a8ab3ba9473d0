"""The page for people: ``python -m service.web`` serves one static page and a small JSON API that
forwards to the gateway over gRPC, as any other client does. The gateway stays the one place that
validates a request; this server only turns JSON into a ColorizeRequest and a status into an HTTP
answer.

    GET  /                 the page (service/web_static/)
    GET  /api/variants     ListVariants as JSON
    POST /api/colorize     {"sketch": base64, "variant": "", "hints": [{"x": 0-1, "y": 0-1,
                           "color": "#rrggbb", "size": 0}], "color_hint": base64, "output_format": "png"}
                           -> {"image": base64, "mime_type", "width", "height", "variant",
                               "model_version", "timings": {...}}; errors -> {"error": {"code", "message"}}

Upstream options (TLS, mutual TLS, bearer token) mirror the gateway's security options.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web
from google.protobuf import json_format

from service.api import DEFAULT_ADDRESS, MAX_MESSAGE_MB, pb, pb_grpc
from service.client import FORMATS, ROUND_ROBIN, parse_color
from service.settings import from_args

log = logging.getLogger("sketch2color.web")
STATIC = Path(__file__).resolve().parent / "web_static"
# gRPC status -> HTTP status, for the JSON API's callers (the page reads the body's message).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    gateway_url: str = DEFAULT_ADDRESS
    gateway_ca: str = ""  # PEM of the CA that signed the gateway's certificate: TLS upstream
    gateway_cert: str = ""  # with gateway_key: this server's client certificate (mutual TLS)
    gateway_key: str = ""
    gateway_token: str = ""  # sent as `authorization: Bearer <token>`
    gateway_token_file: str = ""
    timeout_s: float = 30.0
    max_upload_mb: int = MAX_MESSAGE_MB

    def token(self) -> str:
        if self.gateway_token_file:
            return Path(self.gateway_token_file).read_text().strip()
        return self.gateway_token


def open_channel(cfg: WebConfig) -> grpc.aio.Channel:
    limit = cfg.max_upload_mb << 20
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", 2 * limit), ROUND_ROBIN]
    if not cfg.gateway_ca:
        return grpc.aio.insecure_channel(cfg.gateway_url, options=options)
    read = lambda p: Path(p).read_bytes() if p else None  # noqa: E731
    creds = grpc.ssl_channel_credentials(read(cfg.gateway_ca), read(cfg.gateway_key), read(cfg.gateway_cert))
    return grpc.aio.secure_channel(cfg.gateway_url, creds, options=options)


class BadJson(ValueError):
    pass


def _image(body: dict, key: str) -> bytes:
    value = body.get(key) or ""
    if not isinstance(value, str):
        raise BadJson(f"`{key}` must be a base64 string")
    try:
        return base64.b64decode(value.split(",", 1)[-1], validate=True)  # a data: URL's prefix is fine too
    except binascii.Error as e:
        raise BadJson(f"`{key}` is not valid base64: {e}") from None


def request_from_json(body: dict) -> pb.ColorizeRequest:
    """The JSON body as a ColorizeRequest. Only the JSON's shape is checked here; whether the values
    make sense (positions, colours, variant, image) is the gateway's call."""
    if not isinstance(body, dict):
        raise BadJson("the body must be a JSON object")
    hints = []
    for i, h in enumerate(body.get("hints") or []):
        try:
            color = parse_color(h["color"]) if isinstance(h["color"], str) else pb.Color(**dict(zip("rgb", h["color"])))
            point = pb.Point(x=float(h["x"]), y=float(h["y"]))
            hints.append(pb.Hint(normalized=point, color=color, size=int(h.get("size", 0))))
        except (KeyError, TypeError, ValueError) as e:
            raise BadJson(f"hints[{i}]: need x and y (0 to 1) and color '#rrggbb' ({type(e).__name__}: {e})") from None
    fmt = str(body.get("output_format") or "png").lower()
    if fmt not in FORMATS:
        raise BadJson(f"output_format {fmt!r}: use png, jpeg or webp")
    return pb.ColorizeRequest(
        sketch=_image(body, "sketch"),
        variant=str(body.get("variant") or ""),
        hints=hints,
        color_hint=_image(body, "color_hint"),
        output_format=FORMATS[fmt],
        request_id=str(body.get("request_id") or ""),
    )


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class WebApp:
    def __init__(self, cfg: WebConfig):
        self.cfg = cfg
        token = cfg.token()
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.channel: grpc.aio.Channel | None = None
        self.stub: pb_grpc.ColorizerStub | None = None

    async def start(self, app: web.Application) -> None:
        self.channel = open_channel(self.cfg)
        self.stub = pb_grpc.ColorizerStub(self.channel)

    async def stop(self, app: web.Application) -> None:
        if self.channel is not None:
            await self.channel.close()

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def variants(self, request: web.Request) -> web.Response:
        try:
            answer = await self.stub.ListVariants(pb.ListVariantsRequest(), timeout=10, metadata=self.metadata)
        except grpc.aio.AioRpcError as e:
            return error(HTTP_STATUS.get(e.code(), 502), e.code().name, e.details() or "")
        return web.json_response(json_format.MessageToDict(answer, preserving_proto_field_name=True))

    async def colorize(self, request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        try:
            message = request_from_json(await request.json())
        except BadJson as e:
            return error(400, "INVALID_ARGUMENT", str(e))
        except ValueError as e:  # not JSON at all
            return error(400, "INVALID_ARGUMENT", f"the body is not JSON: {e}")
        t1 = time.perf_counter()
        try:
            # A page that cancels its fetch (a newer edit) cancels this handler, and with it the call.
            answer = await self.stub.Colorize(message, timeout=self.cfg.timeout_s, metadata=self.metadata)
        except grpc.aio.AioRpcError as e:
            return error(HTTP_STATUS.get(e.code(), 502), e.code().name, e.details() or "")
        t2 = time.perf_counter()
        body = json_format.MessageToDict(answer, preserving_proto_field_name=True)  # bytes become base64
        body["timings"] = {**body.get("timings", {}), "web_ms": 1e3 * ((t1 - t0) + (time.perf_counter() - t2))}
        return web.json_response(body)


def make_app(cfg: WebConfig) -> web.Application:
    app = web.Application(client_max_size=(cfg.max_upload_mb << 20) * 3)  # two images, base64-inflated
    webapp = WebApp(cfg)
    app.on_startup.append(webapp.start)
    app.on_cleanup.append(webapp.stop)
    app.router.add_get("/", webapp.index)
    app.router.add_get("/api/variants", webapp.variants)
    app.router.add_post("/api/colorize", webapp.colorize)
    app.router.add_static("/static/", STATIC)
    return app


def config_from_args(argv: list[str] | None = None) -> WebConfig:
    return from_args(WebConfig, "SKETCH2COLOR_WEB_", __doc__.splitlines()[0], argv)


def main(argv: list[str] | None = None) -> None:
    cfg = config_from_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("page on http://%s:%d/ -> gateway %s", cfg.host, cfg.port, cfg.gateway_url)
    web.run_app(make_app(cfg), host=cfg.host, port=cfg.port, print=None)


if __name__ == "__main__":
    main()
