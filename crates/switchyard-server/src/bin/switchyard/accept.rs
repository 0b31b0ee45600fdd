//! Accepts TCP connections for the HTTP server, each holding a place among the
//! [`Waiting`] until it becomes a WebSocket or closes, and sending its request head within
//! the deadline and in at most [`MAX_HEAD_BYTES`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use switchyard_server::waiting::{Waiting, MAX_HEAD_BYTES};
use tower_service::Service;
use tracing::debug;

/// Serves `router` on `listener` until `stop` resolves, each request carrying the peer's
/// `ConnectInfo`. `refused` is called for each connection closed for a cap.
pub async fn serve(listener: TcpListener, router: Router, waiting: Arc<Waiting>, refused: impl Fn(), stop: impl std::future::Future) {
    tokio::pin!(stop);
    loop {
        let (tcp, peer, slot) = tokio::select! {
            accepted = waiting.accept(&listener, &refused) => accepted,
            _ = &mut stop => return,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // The service lives as long as the HTTP connection, and the slot with it.
            let _held = &slot;
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            let mut router = router.clone();
            // A Router is always ready: `call` needs no `poll_ready` first.
            async move { router.call(request.map(axum::body::Body::new)).await }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(waiting.limits().deadline)
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%peer, %err, "HTTP connection ended");
            }
        });
    }
}
