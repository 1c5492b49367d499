//! API tokens and what each route needs. Tokens have a scope — `admin` (everything) or
//! `invoke` (inference on all functions or a named list) — and are kept only as SHA-256
//! digests: the config file holds digests, and tokens from the environment are hashed at
//! start-up. A presented token is hashed and compared with every digest in constant time.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Admin,
    /// `None`: every function.
    Invoke(Option<Vec<String>>),
}

/// A `[[tokens]]` table of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// For logs only.
    pub name: String,
    /// `admin` or `invoke`.
    pub scope: String,
    /// Hex SHA-256 of the token (`faaswap token` prints one).
    pub sha256: String,
    /// `invoke` only: the functions it may call (all when absent).
    #[serde(default)]
    pub functions: Option<Vec<String>>,
}

#[derive(Clone)]
struct Token {
    name: String,
    digest: [u8; 32],
    scope: Scope,
}

/// The configured tokens (empty: the API is open and the server listens on loopback only).
#[derive(Clone, Default)]
pub struct TokenSet {
    tokens: Vec<Token>,
    /// `/metrics` needs an admin token too.
    pub protect_metrics: bool,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("TokenSet").field("tokens", &names).field("protect_metrics", &self.protect_metrics).finish()
    }
}

/// What a route needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access<'a> {
    Open,
    /// Inference on one function (`None`: on all of them, e.g. every function's statistics).
    Invoke(Option<&'a str>),
    /// Inference on some function: any token that may invoke one (its handler then checks the
    /// function it names).
    InvokeSome,
    Admin,
}

/// Why a request was refused: 401 (no or unknown token) or 403 (a token without the scope).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this endpoint needs an API token: send Authorization: Bearer <token>")]
    Missing,
    #[error("unknown API token")]
    Unknown,
    #[error("token {token:?} may not {what}")]
    Forbidden { token: String, what: String },
}

pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenSet {
    /// Builds the set from the file's specs and plain tokens (from the environment), which are
    /// hashed here and not kept.
    pub fn new(specs: &[TokenSpec], plain: &[(&str, Scope, String)]) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for s in specs {
            let digest: [u8; 32] = hex::decode(s.sha256.trim())
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| format!("token {:?}: sha256 must be 64 hex digits", s.name))?;
            let scope = match (s.scope.as_str(), &s.functions) {
                ("admin", None) => Scope::Admin,
                ("admin", Some(_)) => return Err(format!("token {:?}: functions apply to invoke tokens only", s.name)),
                ("invoke", f) => {
                    if let Some(bad) = f.iter().flatten().find(|n| crate::request::FunctionName::parse(n).is_err()) {
                        return Err(format!("token {:?}: invalid function name {bad:?}", s.name));
                    }
                    Scope::Invoke(f.clone())
                }
                (other, _) => return Err(format!("token {:?}: scope {other:?} must be admin or invoke", s.name)),
            };
            tokens.push(Token { name: s.name.clone(), digest, scope });
        }
        for (name, scope, token) in plain {
            if token.trim() != token {
                return Err(format!("{name}: a token may not start or end with whitespace"));
            }
            if token.len() < 16 {
                return Err(format!("{name}: a token must have at least 16 characters"));
            }
            tokens.push(Token { name: name.to_string(), digest: digest(token), scope: scope.clone() });
        }
        Ok(Self { tokens, protect_metrics: false })
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token presented, checked against the access a route needs.
    pub fn check(&self, presented: Option<&str>, access: &Access<'_>) -> Result<(), AuthError> {
        if *access == Access::Open || self.is_empty() {
            return Ok(());
        }
        let presented = presented.ok_or(AuthError::Missing)?;
        let d = digest(presented);
        // Every digest is compared, so the time does not tell which one matched.
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.digest.ct_eq(&d)) {
                found = Some(t);
            }
        }
        let token = found.ok_or(AuthError::Unknown)?;
        let allowed = match (&token.scope, access) {
            (Scope::Admin, _) => true,
            (Scope::Invoke(_), Access::Admin) => false,
            (Scope::Invoke(None), Access::InvokeSome) => true,
            (Scope::Invoke(Some(list)), Access::InvokeSome) => !list.is_empty(),
            (Scope::Invoke(None), Access::Invoke(_)) => true,
            (Scope::Invoke(Some(list)), Access::Invoke(Some(f))) => list.iter().any(|n| n == f),
            (Scope::Invoke(Some(_)), Access::Invoke(None)) => false,
            (_, Access::Open) => true,
        };
        if allowed {
            return Ok(());
        }
        let what = match access {
            Access::Admin => "use the admin API".to_string(),
            Access::Invoke(Some(f)) => format!("invoke function {f:?}"),
            Access::InvokeSome => "invoke any function".to_string(),
            _ => "read every function's statistics".to_string(),
        };
        Err(AuthError::Forbidden { token: token.name.clone(), what })
    }
}

/// What a route needs, read once from its pattern when the route is registered (`route`);
/// each request then only supplies its `{name}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAccess {
    Open,
    /// Open unless `/metrics` is protected.
    Metrics,
    /// Inference on every function (every function's statistics).
    InvokeAll,
    /// Inference on the function the route's `{name}` names.
    InvokeNamed,
    /// Inference on the function the request's body names (the OpenAI routes' `model`): the
    /// route takes any token that may invoke a function, and its handler checks the one named
    /// (`api::auth::may_invoke`); `/v1/models` lists only the functions the token may invoke.
    InvokeInBody,
    Admin,
}

impl RouteAccess {
    /// The access a request to the route needs; `name` is its `{name}` segment, decoded as the
    /// handler sees it (`None`: absent or not decodable, which then names no function).
    pub fn needs<'a>(self, name: Option<&'a str>, protect_metrics: bool) -> Access<'a> {
        match (self, name) {
            (Self::Open, _) => Access::Open,
            (Self::Metrics, _) if protect_metrics => Access::Admin,
            (Self::Metrics, _) => Access::Open,
            (Self::InvokeAll, _) => Access::Invoke(None),
            (Self::InvokeInBody, _) => Access::InvokeSome,
            (Self::InvokeNamed, Some(n)) => Access::Invoke(Some(n)),
            (Self::InvokeNamed, None) | (Self::Admin, _) => Access::Admin,
        }
    }
}

/// The table: what each route pattern needs. Decided on the route actix dispatches a request
/// to — never on the raw path, which the router matches only once decoded (`/%61pi/...` is
/// `/api/...` to it). Every pattern not listed here needs `admin`: a route added without a row
/// fails closed, as does a path no route matches (`api::auth::not_found`).
///
/// Static admin UI files are open (they hold no data; the API they call needs `admin`); health
/// checks, `GET /v2` and the API description are open; `/metrics` is open unless protected.
pub fn route(pattern: &str) -> RouteAccess {
    match pattern {
        "/v2" | "/v2/health/live" | "/v2/health/ready" | "/api/openapi.json" => RouteAccess::Open,
        "/admin" | "/admin/" | "/admin/app.js" | "/admin/app.css" => RouteAccess::Open,
        "/metrics" => RouteAccess::Metrics,
        "/v2/models/stats" => RouteAccess::InvokeAll,
        "/v2/models/{name}"
        | "/v2/models/{name}/versions/1"
        | "/v2/models/{name}/ready"
        | "/v2/models/{name}/versions/1/ready"
        | "/v2/models/{name}/infer"
        | "/v2/models/{name}/versions/1/infer"
        | "/v2/models/{name}/stats"
        | "/v2/models/{name}/versions/1/stats"
        | "/api/v1/functions/{name}/ws"
        | "/v1/models/{name}" => RouteAccess::InvokeNamed,
        "/v1/models" | "/v1/completions" | "/v1/chat/completions" => RouteAccess::InvokeInBody,
        _ => RouteAccess::Admin,
    }
}

/// The WebSocket routes (by pattern), which also take the token as a `token` query parameter
/// (browsers cannot set headers on a WebSocket).
pub fn accepts_query_token(pattern: &str) -> bool {
    matches!(pattern, "/api/v1/events" | "/api/v1/functions/{name}/ws")
}

/// A new random token and its digest, for `faaswap token`.
pub fn new_token() -> (String, String) {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    let token = format!("fsw_{}", hex::encode(bytes));
    let d = hex::encode(digest(&token));
    (token, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, scope: &str, token: &str, functions: Option<&[&str]>) -> TokenSpec {
        TokenSpec {
            name: name.into(),
            scope: scope.into(),
            sha256: hex::encode(digest(token)),
            functions: functions.map(|f| f.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn set() -> TokenSet {
        TokenSet::new(
            &[
                spec("ops", "admin", "admin-token-0123456789", None),
                spec("shop", "invoke", "shop-token-0123456789", Some(&["bert"])),
            ],
            &[("FAASWAP_INVOKE_TOKEN", Scope::Invoke(None), "invoke-token-0123456789".into())],
        )
        .unwrap()
    }

    #[test]
    fn routes_need_the_documented_access() {
        let invoke = |f| Access::Invoke(Some(f));
        let required = |pattern: &str| route(pattern).needs(Some("bert"), false);
        for (pattern, want) in [
            ("/v2", Access::Open),
            ("/v2/health/live", Access::Open),
            ("/v2/health/ready", Access::Open),
            ("/admin", Access::Open),
            ("/admin/", Access::Open),
            ("/admin/app.js", Access::Open),
            ("/metrics", Access::Open),
            ("/api/openapi.json", Access::Open),
            ("/v2/models/{name}", invoke("bert")),
            ("/v2/models/{name}/ready", invoke("bert")),
            ("/v2/models/{name}/versions/1/infer", invoke("bert")),
            ("/v2/models/{name}/stats", invoke("bert")),
            ("/v2/models/stats", Access::Invoke(None)),
            ("/api/v1/functions/{name}/ws", invoke("bert")),
            ("/v1/models/{name}", invoke("bert")),
            ("/v1/models", Access::InvokeSome),
            ("/v1/completions", Access::InvokeSome),
            ("/v1/chat/completions", Access::InvokeSome),
            ("/v2/repository/index", Access::Admin),
            ("/v2/repository/models/{name}/load", Access::Admin),
            ("/api/v1/functions", Access::Admin),
            ("/api/v1/functions/{name}", Access::Admin),
            ("/api/v1/devices", Access::Admin),
            ("/api/v1/events", Access::Admin),
            ("/api/v1/scheduler", Access::Admin),
            // Not in the table: a route someone adds later, or a raw path.
            ("/api/v2/anything", Access::Admin),
            ("/v2/models/bert/infer", Access::Admin),
        ] {
            assert_eq!(required(pattern), want, "{pattern}");
        }
        assert_eq!(route("/v2/models/{name}/infer").needs(None, false), Access::Admin, "no name: admin");
        assert_eq!(route("/metrics").needs(None, true), Access::Admin);
        assert!(accepts_query_token("/api/v1/events") && accepts_query_token("/api/v1/functions/{name}/ws"));
        assert!(!accepts_query_token("/api/v1/functions/{name}") && !accepts_query_token("/v2/models/{name}/infer"));
    }

    #[test]
    fn scopes_allow_what_they_name_and_nothing_else() {
        let s = set();
        let bert = Access::Invoke(Some("bert"));
        let gpt2 = Access::Invoke(Some("gpt2"));
        assert_eq!(s.check(None, &Access::Open), Ok(()));
        assert_eq!(s.check(None, &bert), Err(AuthError::Missing));
        assert_eq!(s.check(Some("wrong-token-0123456789"), &bert), Err(AuthError::Unknown));
        for access in [&bert, &gpt2, &Access::Invoke(None), &Access::Admin] {
            assert_eq!(s.check(Some("admin-token-0123456789"), access), Ok(()), "an admin token may also invoke");
        }
        assert_eq!(s.check(Some("invoke-token-0123456789"), &gpt2), Ok(()));
        assert_eq!(s.check(Some("invoke-token-0123456789"), &Access::Invoke(None)), Ok(()));
        assert!(matches!(s.check(Some("invoke-token-0123456789"), &Access::Admin), Err(AuthError::Forbidden { .. })));
        assert_eq!(s.check(Some("shop-token-0123456789"), &bert), Ok(()));
        for token in ["admin-token-0123456789", "invoke-token-0123456789", "shop-token-0123456789"] {
            assert_eq!(s.check(Some(token), &Access::InvokeSome), Ok(()), "{token} may invoke some function");
        }
        assert_eq!(s.check(None, &Access::InvokeSome), Err(AuthError::Missing));
        assert!(matches!(s.check(Some("shop-token-0123456789"), &gpt2), Err(AuthError::Forbidden { .. })));
        assert!(matches!(
            s.check(Some("shop-token-0123456789"), &Access::Invoke(None)),
            Err(AuthError::Forbidden { .. })
        ));
    }

    #[test]
    fn no_tokens_means_an_open_api_and_bad_specs_are_refused() {
        assert_eq!(TokenSet::default().check(None, &Access::Admin), Ok(()));
        let mut bad = spec("x", "admin", "t", None);
        bad.sha256 = "abc".into();
        assert!(TokenSet::new(&[bad], &[]).is_err());
        assert!(TokenSet::new(&[spec("x", "root", "t", None)], &[]).is_err());
        assert!(TokenSet::new(&[spec("x", "admin", "t", Some(&["f"]))], &[]).is_err());
        assert!(TokenSet::new(&[spec("x", "invoke", "t", Some(&["../f"]))], &[]).is_err());
        assert!(TokenSet::new(&[], &[("FAASWAP_ADMIN_TOKEN", Scope::Admin, "short".into())]).is_err());
        for padded in [" admin-token-0123456789", "admin-token-0123456789\n", "\tadmin-token-0123456789"] {
            let err = TokenSet::new(&[], &[("FAASWAP_ADMIN_TOKEN", Scope::Admin, padded.into())]).unwrap_err();
            assert!(err.contains("whitespace"), "{err}");
        }
    }

    #[test]
    fn only_digests_are_kept() {
        let s = set();
        assert!(!format!("{s:?}").contains("token-0123456789"));
        let (token, d) = new_token();
        assert!(token.starts_with("fsw_") && token.len() == 68);
        assert_eq!(d, hex::encode(digest(&token)));
    }
}
