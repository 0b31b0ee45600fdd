//! Accepts TCP connections for the HTTP server, each holding a place among the
//! [`Waiting`] until its first request has come, and sending each request head within the
//! deadline and in at most [`MAX_HEAD_BYTES`]. A connection that
//! opens with an event stream's request is served without hyper: the stream is all it
//! will carry, and it then costs what a WebSocket does. With TLS, each connection's
//! handshake is done first, within the same deadline, and hyper serves every request.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use switchyard_server::listener::read_request;
use switchyard_server::socket::Socket;
use switchyard_server::waiting::{Waiting, MAX_HEAD_BYTES};
use tokio::net::TcpStream;

use crate::http::App;
use tower_service::Service;
use tracing::debug;

/// Serves `router` on `listener` until `stop` resolves, each request carrying the peer's
/// `ConnectInfo`. `refused` is called for each connection closed for a cap.
pub async fn serve(listener: TcpListener, app: Arc<App>, waiting: Arc<Waiting>, refused: impl Fn() + Clone + Send + 'static, stop: impl std::future::Future) {
    tokio::pin!(stop);
    let router = crate::http::router(app.clone());
    loop {
        let (tcp, peer, slot) = tokio::select! {
            accepted = waiting.accept(&listener, &refused) => accepted,
            _ = &mut stop => return,
        };
        let (router, app, deadline, refused) = (router.clone(), app.clone(), waiting.limits().deadline, refused.clone());
        tokio::spawn(async move {
            let socket = match &app.tls {
                Some(tls) => match tokio::time::timeout(deadline, tls.accept(tcp)).await {
                    Ok(Some(socket)) => socket,
                    _ => return refused(),
                },
                None if opens_event_stream(&tcp, deadline).await => {
                    let mut socket = Socket::Plain(tcp);
                    if let Ok(Ok((request, _))) = tokio::time::timeout(deadline, read_request(&mut socket, peer.ip())).await {
                        crate::http::raw_event_stream(app, socket, peer, request, slot).await;
                    }
                    return;
                }
                None => Socket::Plain(tcp),
            };
            // Given up once a whole request has come: a keep-alive connection (a browser's
            // sends, the API's clients) is then bounded by hyper's header timeout, which
            // ends one idle for that long, not by the handshakes' caps.
            let slot = std::sync::Mutex::new(Some(slot));
            let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                slot.lock().map(|mut slot| slot.take()).ok();
                request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                let mut router = router.clone();
                // A Router is always ready: `call` needs no `poll_ready` first.
                async move { router.call(request.map(axum::body::Body::new)).await }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(deadline)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(socket), service)
                .with_upgrades();
            if let Err(err) = connection.await {
                debug!(%peer, %err, "HTTP connection ended");
            }
        });
    }
}

/// Whether the connection's first request, as far as it has arrived, is an event stream's:
/// a GET of a path ending in `/events`. A request line not yet whole goes to hyper, which
/// serves event streams too.
async fn opens_event_stream(tcp: &TcpStream, deadline: std::time::Duration) -> bool {
    let mut first = [0u8; 2048];
    let Ok(Ok(len)) = tokio::time::timeout(deadline, tcp.peek(&mut first)).await else { return false };
    let Some(line_end) = first[..len].windows(2).position(|pair| pair == b"\r\n") else { return false };
    let mut parts = first[..line_end].split(|&b| b == b' ');
    let (Some(b"GET"), Some(target)) = (parts.next(), parts.next()) else { return false };
    target.split(|&b| b == b'?').next().is_some_and(|path| path.ends_with(b"/events"))
}
