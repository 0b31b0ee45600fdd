//! The binary's event sink: one log line per connection opened and closed, and per
//! session ended, a wake-up for history long polls per publication, and requests handed
//! to the backend proxy. Nothing is logged per message.

use std::sync::Arc;

use switchyard_core::{Event, EventSink};
use switchyard_server::proxy::Proxy;
use tokio::sync::Notify;
use tracing::{debug, info};

#[derive(Default)]
pub struct LogEvents {
    /// Woken at every publication in a session with a stream; each long poll then looks
    /// at its own session's history.
    pub published: Notify,
    /// Answers `request` messages and renews lifetimes, when `--proxy-request-url` and
    /// `--proxy-refresh-url` are given.
    pub proxy: Option<Arc<Proxy>>,
}

impl EventSink for LogEvents {
    fn emit(&self, event: Event) {
        match event {
            Event::Connected(c) => info!(
                connection = %c.connection_id,
                session = c.session_id.as_ref().map_or("-", |s| s.as_str()),
                client = %c.client_id,
                user = c.user_id.as_deref().unwrap_or("-"),
                "connection opened"
            ),
            Event::Disconnected { connection: c, code, reason } => info!(
                connection = %c.connection_id,
                session = c.session_id.as_ref().map_or("-", |s| s.as_str()),
                code,
                reason = %reason,
                "connection closed"
            ),
            Event::SessionCreated(s) => debug!(session = %s.session_id, "session created"),
            Event::SessionDeleted { session_id, .. } => info!(session = %session_id, "session deleted"),
            Event::SessionExpired { session_id, .. } => info!(session = %session_id, "session expired"),
            // Without --proxy-request-url requests are answered NO_HANDLER before an event
            // exists; the binary watches no message types.
            Event::Request { connection, request_id, payload } => {
                if let Some(proxy) = &self.proxy {
                    proxy.request(connection, request_id, payload);
                }
            }
            Event::TokenExpiring { connection, .. } => {
                if let Some(proxy) = &self.proxy {
                    proxy.refresh(connection);
                }
            }
            Event::Message { .. } | Event::ChannelOccupied { .. } | Event::ChannelVacated { .. } => {}
            Event::Published { .. } => self.published.notify_waiters(),
        }
    }
}
