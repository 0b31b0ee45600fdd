//! Which upgrades a port or an attached server takes, by path: a pattern such as
//! `/session/:sessionId`, and where a matching upgrade goes.

use switchyard_core::Route;

#[derive(Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    SessionId,
}

/// A path such as `/session/:sessionId`: literal segments and at most one `:sessionId`.
/// Without one, matching upgrades are sessionless connections.
#[derive(Debug)]
pub struct PathPattern {
    segments: Vec<Segment>,
}

impl PathPattern {
    /// Reads a pattern; the error says what is wrong with it.
    pub fn parse(pattern: &str) -> std::result::Result<Self, String> {
        let rest = pattern.strip_prefix('/').ok_or_else(|| format!("path must start with '/', got {pattern:?}"))?;
        let segments: Vec<Segment> = rest
            .split('/')
            .map(|segment| match segment.strip_prefix(':') {
                Some("sessionId") => Ok(Segment::SessionId),
                Some(other) => Err(format!("path may use only the :sessionId parameter, got :{other}")),
                None => Ok(Segment::Literal(segment.to_owned())),
            })
            .collect::<std::result::Result<_, _>>()?;
        if segments.iter().filter(|s| **s == Segment::SessionId).count() > 1 {
            return Err("path may hold :sessionId once".into());
        }
        Ok(Self { segments })
    }

    /// Where an upgrade to `url` goes, when the path matches (the query is ignored). The
    /// session id is percent-decoded, as a URL path segment is.
    pub fn route(&self, url: &str) -> Option<Route> {
        let path = url.split(['?', '#']).next().unwrap_or_default();
        let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut route = Route::Sessionless;
        for (segment, part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::SessionId if !part.is_empty() => {
                    route = Route::Session(percent_encoding::percent_decode_str(part).decode_utf8().ok()?.into_owned())
                }
                _ => return None,
            }
        }
        Some(route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_paths_and_takes_the_session_id() {
        let pattern = PathPattern::parse("/session/:sessionId").unwrap();
        assert_eq!(pattern.route("/session/abc"), Some(Route::Session("abc".into())));
        assert_eq!(pattern.route("/session/abc?token=1"), Some(Route::Session("abc".into())));
        assert_eq!(pattern.route("/session/tutorial:intro.step-1"), Some(Route::Session("tutorial:intro.step-1".into())));
        assert_eq!(pattern.route("/session/caf%C3%A9%20%2F"), Some(Route::Session("café /".into())));
        assert_eq!(pattern.route("/session/%FF"), None);
        assert_eq!(pattern.route("/session/"), None);
        assert_eq!(pattern.route("/session/abc/more"), None);
        assert_eq!(pattern.route("/other/abc"), None);
        assert_eq!(PathPattern::parse("/live").unwrap().route("/live"), Some(Route::Sessionless));
    }

    #[test]
    fn refuses_bad_patterns() {
        assert!(PathPattern::parse("session/:sessionId").is_err());
        assert!(PathPattern::parse("/:room").is_err());
        assert!(PathPattern::parse("/:sessionId/:sessionId").is_err());
    }
}
