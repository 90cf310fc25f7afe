//! Warnings: a valid file that probably does not do what was meant. `check` prints them
//! (exit 0) and `run` logs them; each names file:line:col and the key.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

fn warnings(text: &str) -> Vec<String> {
    common::ok(text).warnings
}

#[test]
fn routes_that_can_never_match_are_pointed_out() {
    let text = r#"
[[listeners]]
name = "edge"
address = "127.0.0.1:8080"

[[listeners.routes]]
match.path_prefix = "/"
cluster = "c"

[[listeners.routes]]
name = "auth"
match.service = "pkg.Auth"
cluster = "c"

[[listeners.routes]]
match.service = "pkg.Auth"
match.authority = "a.example"
cluster = "c"

[[clusters]]
name = "c"
endpoints = ["127.0.0.1:1"]
"#;
    let got = warnings(text);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with(
            "t.toml:10:1: listeners[0].routes[1]: can never match: routes[0] before it"
        ),
        "{got:?}"
    );
    assert!(
        got[1].contains("listeners[0].routes[2]: can never match"),
        "{got:?}"
    );

    // Most specific first: no warning.
    let ordered = r#"
[[listeners]]
name = "edge"
address = "127.0.0.1:8080"

[[listeners.routes]]
match.service = "pkg.Auth"
match.authority = "a.example"
cluster = "c"

[[listeners.routes]]
match.service = "pkg.Auth"
cluster = "c"

[[listeners.routes]]
match.path_prefix = "/"
cluster = "c"

[[clusters]]
name = "c"
endpoints = ["127.0.0.1:1"]
"#;
    assert_eq!(warnings(ordered), Vec::<String>::new());
}

#[test]
fn a_route_without_match_before_others_duplicate_names_and_odd_limits() {
    let text = r#"
[server]
workers = 512

[[listeners]]
name = "edge"
address = "127.0.0.1:8080"
max_header_bytes = 100
max_connection_age = "100ms"
send_timeout = "100ms"

[[listeners.routes]]
name = "r"
cluster = "c"

[[listeners.routes]]
name = "r"
match.service = "pkg.S"
cluster = "c"

[[listeners]]
name = "empty"
address = "127.0.0.1:8081"

[[clusters]]
name = "c"
endpoints = ["127.0.0.1:1"]
"#;
    let got = warnings(text).join("\n");
    for want in [
        "t.toml:3:11: server.workers: 512 workers on",
        "listeners[0].max_header_bytes: 100 bytes is small",
        "listeners[0].routes[0]: has no `match`: it takes every request, so the routes after it are never used",
        "listeners[0].routes[1]: can never match",
        "t.toml:17:8: listeners[0].routes[1].name: route name \"r\" is also the name of listeners[0].routes[0]",
        "listeners[1]: has no routes",
        "listeners[0].max_connection_age: 100ms is very short: every client reconnects that often",
        "listeners[0].send_timeout: 100ms is very short: a client that pauses reading a stream that long loses its connection",
    ] {
        assert!(got.contains(want), "{want:?} missing from:\n{got}");
    }
}
