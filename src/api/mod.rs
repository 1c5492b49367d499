//! The HTTP surface (KServe v2, management API, WebSockets, metrics, admin UI). Filled in by
//! the runtime work (issue 3); `crate::cli` is the only front end so far.
