//! The hooks a host puts in front of its relay: the tokens connections send after the
//! upgrade (subscription tokens for `private:` channels, fresh tokens in `refresh`) are
//! checked here, with the keys of token auth, and every other question goes to the app's
//! own hooks (JavaScript in the addon; [`NoHooks`](switchyard_core::NoHooks) for none).

use std::sync::Arc;

use switchyard_core::{Ask, ChannelName, Decides, Hooks, Question, Verdict};

use crate::admission::TokenAuth;

/// Tokens first, then the app's hooks.
pub struct TokenChecks {
    auth: Option<Arc<TokenAuth>>,
    app: Arc<dyn Hooks>,
    decides: Decides,
}

impl TokenChecks {
    /// Checks tokens with `auth`'s keys (none: every token is refused), and asks `app` the rest.
    pub fn new(auth: Option<Arc<TokenAuth>>, app: Arc<dyn Hooks>) -> Self {
        let decides = app.decides();
        Self { auth, app, decides }
    }

    /// Whether `token` lets the connection of `user` into `channel`: signed with token
    /// auth's keys, unexpired, its `channel` claim the channel's name and its user the
    /// connection's.
    fn check(&self, token: &str, channel: &str, user: Option<&str>) -> Verdict {
        let refuse = |reason: String| Verdict::Refuse(Some(reason));
        let Some(auth) = &self.auth else { return refuse("Subscription tokens need token auth (auth.jwt) on the server".into()) };
        let Some(user) = user else { return refuse("A subscription token needs a connection with a user".into()) };
        let identity = match auth.verifier.verify(token) {
            Ok(identity) => identity,
            Err(err) => return refuse(format!("The subscription token is refused: {err}")),
        };
        let claimed = identity.metadata.as_ref().and_then(|claims| claims.get("channel")).and_then(|c| c.as_str());
        if claimed != Some(channel) {
            return refuse("The subscription token is for another channel".into());
        }
        if identity.user_id.as_deref() != Some(user) {
            return refuse("The subscription token is for another user".into());
        }
        Verdict::Allow
    }
}

impl TokenChecks {
    /// Whether `token` renews the connection of `user`: valid, and for the same user.
    fn renew(&self, token: &str, user: Option<&str>) -> Verdict {
        let refuse = |reason: String| Verdict::Refuse(Some(reason));
        let Some(auth) = &self.auth else { return refuse("The server has no token auth (auth.jwt) to check a token with".into()) };
        match auth.verifier.verify(token) {
            Err(err) => refuse(format!("The token is refused: {err}")),
            Ok(identity) if identity.user_id.as_deref() != user => refuse("The token is for another user".into()),
            Ok(identity) => identity.expires_at.map_or_else(|| refuse("The token has no exp".into()), Verdict::Renew),
        }
    }
}

impl Hooks for TokenChecks {
    fn decides(&self) -> Decides {
        self.decides
    }

    fn ask(&self, question: Question) -> Option<Verdict> {
        if let Ask::Refresh { token } = &question.ask {
            return Some(self.renew(token, question.connection.user_id.as_deref()));
        }
        if let Ask::Join { channel, token } = &question.ask {
            let private = ChannelName::parse(channel).is_ok_and(|name| name.is_private());
            if let (true, Some(token)) = (private, token) {
                return Some(self.check(token, channel, question.connection.user_id.as_deref()));
            }
            if !self.decides.join {
                return Some(Verdict::Refuse(Some("A private channel is joined with a subscription token or the application's yes".into())));
            }
        }
        self.app.ask(question)
    }
}

/// Two sets of hooks that answer different questions (the addon's JavaScript hooks and its
/// backend proxy): each question goes to the one that answers it.
pub struct EitherHooks {
    /// Answers what `proxy` does not.
    pub js: Arc<dyn Hooks>,
    /// Answers the questions it decides.
    pub proxy: Arc<dyn Hooks>,
}

impl Hooks for EitherHooks {
    fn decides(&self) -> Decides {
        let (js, proxy) = (self.js.decides(), self.proxy.decides());
        Decides { join: js.join || proxy.join, publish: js.publish || proxy.publish }
    }

    fn ask(&self, question: Question) -> Option<Verdict> {
        let proxy = self.proxy.decides();
        let by_proxy = match question.ask {
            Ask::Join { .. } => proxy.join,
            Ask::Publish { .. } => proxy.publish,
            Ask::Refresh { .. } => false,
        };
        if by_proxy { self.proxy.ask(question) } else { self.js.ask(question) }
    }
}
