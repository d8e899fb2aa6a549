//! WebSocket upgrades through the router. actix-web cannot hand a raw upgraded connection to a
//! handler, so the router terminates the client's WebSocket (actix-ws), opens one to the instance
//! (awc) and copies messages both ways, frame by frame (no aggregation, so fragmented and large
//! messages stream). Only the connect is retried on another instance; after the upgrade a side
//! that closes or fails closes the other. Other upgrade protocols are not proxied (answered as
//! plain HTTP requests without the upgrade).

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use awc::error::{SendRequestError, WsClientError};
use awc::ws::{Frame, Message};
use futures_util::{SinkExt, StreamExt};
use paas_common::ErrorCode;
use std::sync::atomic::Ordering;

use super::proxy::{fail, next_backend, InFlight, Meta};
use super::Router;

pub fn is_websocket(req: &HttpRequest) -> bool {
    req.headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Headers the instance's handshake must not get from the client: awc writes its own key,
/// version and (no) extensions, since the two legs are separate WebSockets.
/// Largest single frame either leg accepts (the crates' default, 64 KiB, is too small for apps
/// that send one big message unfragmented).
const MAX_FRAME: usize = 16 * 1024 * 1024;

const HANDSHAKE: [&str; 3] = [
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
];

pub(super) async fn bridge(
    req: HttpRequest,
    payload: web::Payload,
    ctx: web::Data<Router>,
    clients: web::Data<super::proxy::Clients>,
    meta: Meta,
    target: Option<u32>,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> HttpResponse {
    let deadline = meta.started + ctx.wait;
    let mut tried: Vec<String> = Vec::new();
    let (backend, upstream, protocol) = loop {
        let Some(backend) =
            next_backend(&ctx, &meta.app, target, &tried, deadline, !tried.is_empty()).await
        else {
            let (code, reason) = if tried.is_empty() {
                (ErrorCode::NoHealthyInstance, "no_healthy_instance")
            } else {
                (ErrorCode::UpstreamError, "connect_failed")
            };
            return fail(
                &ctx,
                &meta,
                code,
                reason,
                format!("no instance of {:?} took the WebSocket", meta.app),
            );
        };
        let mut wsreq = clients
            .ws
            .ws(format!("ws://{}{}", backend.address, meta.path))
            .max_frame_size(MAX_FRAME);
        for (name, value) in &headers {
            if !HANDSHAKE.contains(&name.as_str()) {
                wsreq = wsreq.header(name.clone(), value.clone());
            }
        }
        match wsreq.connect().await {
            Ok((res, framed)) => {
                let protocol = res.headers().get("sec-websocket-protocol").cloned();
                break (backend, framed, protocol);
            }
            Err(WsClientError::SendRequest(SendRequestError::Connect(e))) => {
                tracing::warn!(app = %meta.app, backend = %backend.address, error = %e, "WebSocket connect failed; trying another instance");
                ctx.table.stats.retries.fetch_add(1, Ordering::Relaxed);
                tried.push(backend.address.clone());
            }
            Err(e) => {
                return fail(
                    &ctx,
                    &meta,
                    ErrorCode::UpstreamError,
                    "websocket_handshake_failed",
                    format!("instance {}: {e}", backend.index),
                );
            }
        }
    };

    let (mut response, mut session, from_client) = match actix_ws::handle(&req, payload) {
        Ok(parts) => parts,
        Err(e) => {
            return fail(
                &ctx,
                &meta,
                ErrorCode::BadRequest,
                "bad_websocket_handshake",
                e.to_string(),
            )
        }
    };
    let h = response.headers_mut();
    if let Some(p) = protocol {
        h.insert(HeaderName::from_static("sec-websocket-protocol"), p);
    }
    h.insert(
        HeaderName::from_static("x-paas-app"),
        HeaderValue::from_str(&meta.app).unwrap_or(HeaderValue::from_static("")),
    );
    h.insert(
        HeaderName::from_static("x-paas-instance"),
        HeaderValue::from(backend.index),
    );
    if let Ok(v) = HeaderValue::from_str(&meta.request_id) {
        h.insert(HeaderName::from_static("x-request-id"), v);
    }
    ctx.table.stats.websockets.fetch_add(1, Ordering::Relaxed);
    ctx.table.stats.count_status(101);

    let mut from_client = from_client.max_frame_size(MAX_FRAME);
    let guard = InFlight::new(backend.clone());
    actix_web::rt::spawn(async move {
        let _guard = guard;
        let (mut to_upstream, mut from_upstream) = upstream.split();
        // After the client's Close goes up, only the instance's answering Close is awaited, and
        // passed down, so both sides see a clean closing handshake.
        let mut client_closed = false;
        loop {
            tokio::select! {
                m = from_client.recv(), if !client_closed => {
                    let Some(Ok(m)) = m else { let _ = to_upstream.close().await; break };
                    client_closed = matches!(m, Message::Close(_));
                    if to_upstream.send(m).await.is_err() {
                        break;
                    }
                }
                f = from_upstream.next() => {
                    let sent = match f {
                        Some(Ok(Frame::Text(b))) => match std::str::from_utf8(&b) {
                            Ok(s) => session.text(s.to_string()).await,
                            Err(_) => break,
                        },
                        Some(Ok(Frame::Binary(b))) => session.binary(b).await,
                        Some(Ok(Frame::Continuation(c))) => session.continuation(c).await,
                        Some(Ok(Frame::Ping(b))) => session.ping(&b).await,
                        Some(Ok(Frame::Pong(b))) => session.pong(&b).await,
                        Some(Ok(Frame::Close(reason))) => { let _ = session.close(reason).await; return; }
                        Some(Err(_)) | None => { let _ = session.close(None).await; return; }
                    };
                    if sent.is_err() {
                        let _ = to_upstream.close().await;
                        break;
                    }
                }
            }
        }
    });
    response
}
