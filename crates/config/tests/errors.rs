//! Each kind of error names the right `file:line:col` and key, and all errors of a file
//! are reported together.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{MINIMAL, err, lines, minimal_with};

/// The single error of `text`, as `(line, col, key)`, with its message.
fn one(text: &str) -> ((usize, usize, String), String) {
    let errors = err(text);
    assert_eq!(errors.len(), 1, "expected one error, got:\n{errors}");
    let e = &errors.errors()[0];
    assert_eq!(e.file(), "t.toml");
    (
        (e.line(), e.col(), e.key().to_owned()),
        e.message().to_owned(),
    )
}

fn at(line: usize, col: usize, key: &str) -> (usize, usize, String) {
    (line, col, key.to_owned())
}

#[test]
fn toml_syntax_errors_have_their_position() {
    let (pos, msg) = one("[[listeners]\nname = \"a\"\n");
    assert_eq!(pos, at(1, 13, ""));
    assert!(msg.contains("expected `]]`") || msg.contains("]"), "{msg}");

    let got = lines("a = = 1\nb = \"unterminated\n");
    assert!(got.len() >= 2, "{got:?}");
    assert!(got[0].starts_with("t.toml:1:"), "{got:?}");
    assert!(got.iter().any(|l| l.starts_with("t.toml:2:")), "{got:?}");
}

#[test]
fn unknown_keys_are_errors_at_the_key() {
    let (pos, msg) = one(&minimal_with(
        "address = \"127.0.0.1:8080\"",
        "adress = \"x\"",
    ));
    assert_eq!(pos, at(5, 1, "listeners[0].adress"));
    assert!(
        msg.starts_with("unknown field `adress`, expected one of"),
        "{msg}"
    );

    let (pos, msg) = one(&minimal_with(
        "cluster = \"backends\"",
        "match.servce = \"x\"",
    ));
    assert_eq!(pos, at(8, 7, "listeners[0].routes[0].match.servce"));
    assert!(msg.starts_with("unknown field `servce`"), "{msg}");

    let (pos, msg) = one(&format!("{MINIMAL}\n[admn]\naddress = \"127.0.0.1:1\"\n"));
    assert_eq!(pos, at(13, 1, "admn"));
    assert!(msg.starts_with("unknown key `admn`"), "{msg}");

    let (pos, _) = one(&MINIMAL.replace(
        "[\"127.0.0.1:50051\"]",
        "[{ address = \"127.0.0.1:1\", wieght = 2 }]",
    ));
    assert_eq!(pos, at(11, 41, "clusters[0].endpoints[0].wieght"));
}

#[test]
fn wrong_types_and_missing_keys() {
    let (pos, msg) = one(&MINIMAL.replace("name = \"edge\"", "name = 5"));
    assert_eq!(pos, at(3, 8, "listeners[0].name"));
    assert!(
        msg.starts_with("invalid type: integer `5`, expected a string"),
        "{msg}"
    );

    let (pos, msg) = one(&MINIMAL.replace("name = \"edge\"\n", ""));
    assert_eq!(pos, at(2, 1, "listeners[0]"));
    assert_eq!(msg, "missing field `name`");

    let (pos, msg) = one(&minimal_with(
        "cluster = \"backends\"",
        "[listeners.routes.match]\ngrpc = \"yes\"",
    ));
    assert_eq!(pos, at(9, 8, "listeners[0].routes[0].match.grpc"));
    assert!(msg.contains("expected a boolean"), "{msg}");

    let (pos, _) = one(&minimal_with(
        "address = \"127.0.0.1:8080\"",
        "max_connections = -1",
    ));
    assert_eq!(pos, at(5, 19, "listeners[0].max_connections"));

    let (pos, msg) = one("listeners = 5\n");
    assert_eq!(pos, at(1, 13, "listeners"));
    assert!(msg.contains("expected an array"), "{msg}");
}

#[test]
fn bad_durations() {
    for (value, col, why) in [
        ("\"5\"", 16, "a unit is required"),
        ("\"-1s\"", 16, "non-negative"),
        ("\"1x\"", 16, "unknown unit"),
        ("\"0s\"", 16, "must be greater than 0s"),
    ] {
        let text = minimal_with(
            "address = \"127.0.0.1:8080\"",
            &format!("idle_timeout = {value}"),
        );
        let (pos, msg) = one(&text);
        assert_eq!(pos, at(5, col, "listeners[0].idle_timeout"), "{value}");
        assert!(msg.contains(why), "{value}: {msg}");
    }
    let (pos, msg) = one(&minimal_with("cluster = \"backends\"", "timeout = \"2 s\""));
    assert_eq!(pos, at(8, 11, "listeners[0].routes[0].timeout"));
    assert!(msg.starts_with("invalid duration \"2 s\""), "{msg}");

    let (pos, _) = one(&format!("[server]\ndrain_timeout = \"soon\"\n{MINIMAL}"));
    assert_eq!(pos, at(2, 17, "server.drain_timeout"));
}

#[test]
fn bad_addresses() {
    let (pos, msg) = one(&MINIMAL.replace("127.0.0.1:8080", "localhost:8080"));
    assert_eq!(pos, at(4, 11, "listeners[0].address"));
    assert!(
        msg.starts_with("invalid address \"localhost:8080\""),
        "{msg}"
    );

    for bad in [
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:99999",
        "::1:80",
        ":80",
    ] {
        let (pos, msg) = one(&MINIMAL.replace("127.0.0.1:50051", bad));
        assert_eq!(pos, at(11, 14, "clusters[0].endpoints[0]"), "{bad}");
        assert!(
            msg.starts_with(&format!("invalid endpoint address {bad:?}")),
            "{msg}"
        );
    }
    let (pos, _) = one(&MINIMAL.replace("[\"127.0.0.1:50051\"]", "[{ address = \"nope\" }]"));
    assert_eq!(pos, at(11, 26, "clusters[0].endpoints[0].address"));
}

#[test]
fn names_and_addresses_must_be_unique() {
    let text = format!(
        "{MINIMAL}\n[[listeners]]\nname = \"edge\"\naddress = \"127.0.0.1:8080\"\n\n[[clusters]]\nname = \"backends\"\nendpoints = [\"127.0.0.1:2\"]\n"
    );
    assert_eq!(
        lines(&text),
        [
            "t.toml:14:8: listeners[1].name: duplicate listener name `edge` (also listeners[0])",
            "t.toml:15:11: listeners[1].address: address 127.0.0.1:8080 is already used by listener `edge`",
            "t.toml:18:8: clusters[1].name: duplicate cluster name `backends` (also clusters[0])",
        ]
    );
}

#[test]
fn route_cluster_must_exist() {
    let (pos, msg) = one(&MINIMAL.replace("cluster = \"backends\"", "cluster = \"backend\""));
    assert_eq!(pos, at(7, 11, "listeners[0].routes[0].cluster"));
    assert_eq!(
        msg,
        "unknown cluster `backend` (defined clusters: backends)"
    );
}

#[test]
fn at_least_one_listener() {
    let (pos, msg) = one("[[clusters]]\nname = \"a\"\nendpoints = [\"a:1\"]\n");
    assert_eq!(pos, at(1, 1, "listeners"));
    assert_eq!(msg, "at least one [[listeners]] is required");
}

#[test]
fn weights_are_at_least_one() {
    for w in ["0", "-3", "4294967296"] {
        let (pos, msg) = one(&MINIMAL.replace(
            "[\"127.0.0.1:50051\"]",
            &format!("[{{ address = \"127.0.0.1:1\", weight = {w} }}]"),
        ));
        assert_eq!(pos, at(11, 50, "clusters[0].endpoints[0].weight"), "{w}");
        assert!(msg.starts_with("weight must be between 1 and"), "{msg}");
    }
}

#[test]
fn ring_hash_and_hash_key_go_together() {
    let lb = |extra: &str| MINIMAL.replace("endpoints =", &format!("{extra}\nendpoints ="));

    let (pos, msg) = one(&lb("lb = \"ring_hash\""));
    assert_eq!(pos, at(11, 6, "clusters[0].lb"));
    assert!(msg.contains("needs hash_key"), "{msg}");

    let (pos, msg) = one(&lb("hash_key = \"client_ip\""));
    assert_eq!(pos, at(11, 1, "clusters[0].hash_key"));
    assert_eq!(msg, "hash_key is only used with lb = \"ring_hash\"");

    let (pos, msg) = one(&lb("lb = \"ring_hash\"\nhash_key = \"cookie:x\""));
    assert_eq!(pos, at(12, 12, "clusters[0].hash_key"));
    assert!(msg.starts_with("unknown hash_key \"cookie:x\""), "{msg}");

    let (pos, _) = one(&lb("lb = \"ring_hash\"\nhash_key = \"header:bad header\""));
    assert_eq!(pos, at(12, 12, "clusters[0].hash_key"));

    let (pos, msg) = one(&lb("lb = \"fastest\""));
    assert_eq!(pos, at(11, 6, "clusters[0].lb"));
    assert!(msg.starts_with("unknown lb \"fastest\""), "{msg}");
}

#[test]
fn a_cluster_needs_endpoints_or_discovery() {
    let (pos, msg) = one(&MINIMAL.replace("endpoints = [\"127.0.0.1:50051\"]", ""));
    assert_eq!(pos, at(9, 1, "clusters[0]"));
    assert_eq!(msg, "a cluster needs `endpoints` (or `discovery`)");

    let (pos, msg) = one(&MINIMAL.replace("[\"127.0.0.1:50051\"]", "[]"));
    assert_eq!(pos, at(11, 13, "clusters[0].endpoints"));
    assert_eq!(msg, "must not be empty");

    // With discovery, no endpoints are needed; a missing file is an error at `file`.
    let (pos, msg) = one(&MINIMAL.replace(
        "endpoints = [\"127.0.0.1:50051\"]",
        "discovery = { file = \"/nonexistent/eps.json\" }",
    ));
    assert_eq!(pos, at(11, 22, "clusters[0].discovery.file"));
    assert!(
        msg.starts_with("cannot read /nonexistent/eps.json"),
        "{msg}"
    );
    // etcd: each address and the prefix are checked at their keys; dns keys do not go.
    let etcd = |keys: &str| {
        lines(&MINIMAL.replace(
            "endpoints = [\"127.0.0.1:50051\"]",
            &format!("discovery = {{ {keys} }}"),
        ))
    };
    let bad = etcd("etcd = [\"127.0.0.1:2379\", \"etcd.local\"], prefix = \"\", refresh = \"1s\"");
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert!(
        bad.iter().any(|l| l.contains(
            "discovery.etcd[1]: invalid etcd address \"etcd.local\": expected host:port"
        )),
        "{bad:?}"
    );
    assert!(
        bad.iter()
            .any(|l| l.contains("discovery.prefix: an empty prefix would take every key")),
        "{bad:?}"
    );
    assert!(
        bad.iter()
            .any(|l| l.contains("discovery.refresh: `refresh` goes with dns, not etcd")),
        "{bad:?}"
    );
    let bad = etcd("etcd = []");
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].contains("needs at least one etcd address"),
        "{bad:?}"
    );
    // dns: the name, the resolver and the refresh are checked at their keys.
    let dns = |keys: &str| {
        lines(&MINIMAL.replace(
            "endpoints = [\"127.0.0.1:50051\"]",
            &format!("discovery = {{ {keys} }}"),
        ))
    };
    let bad = dns("dns = \"backend.internal\", resolver = \"dns.local\", refresh = \"0s\"");
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert!(
        bad.iter()
            .any(|l| l.contains("discovery.dns: invalid DNS name \"backend.internal\"")),
        "{bad:?}"
    );
    assert!(
        bad.iter().any(|l| l
            .contains("discovery.resolver: invalid DNS server \"dns.local\": expected IP:PORT")),
        "{bad:?}"
    );
    assert!(
        bad.iter()
            .any(|l| l.contains("discovery.refresh: must be greater than 0s")),
        "{bad:?}"
    );
}

#[test]
fn log_values() {
    let text =
        format!("[log]\nlevel = \"verbose\"\naccess_log = \"\"\nformat = \"xml\"\n{MINIMAL}");
    assert_eq!(
        lines(&text),
        [
            "t.toml:2:9: log.level: unknown level \"verbose\", expected one of error, warn, info, debug, trace",
            "t.toml:3:14: log.access_log: must be stdout, stderr, off or a file path",
            "t.toml:4:10: log.format: unknown format \"xml\", expected json or text",
        ]
    );
}

#[test]
fn header_names_and_values() {
    let text = minimal_with(
        "cluster = \"backends\"",
        "request_headers = { \"bad name\" = \"x\" }\nresponse_headers = { \"x-ok\" = \"a\\nb\" }\nmatch.headers = { \"x(y)\" = \"1\" }",
    );
    assert_eq!(
        lines(&text),
        [
            "t.toml:8:21: listeners[0].routes[0].request_headers.\"bad name\": invalid HTTP header name \"bad name\": a name is letters, digits and - (no spaces or colons), e.g. \"x-frame-options\"",
            "t.toml:9:31: listeners[0].routes[0].response_headers.x-ok: invalid HTTP header value (control characters are not allowed)",
            "t.toml:10:19: listeners[0].routes[0].match.headers.\"x(y)\": invalid HTTP header name \"x(y)\": a name is letters, digits and - (no spaces or colons), e.g. \"x-frame-options\"",
        ]
    );
}

#[test]
fn match_values() {
    let text = minimal_with(
        "cluster = \"backends\"",
        "match = { service = \"a/b\", method = \"/pkg.S/M\", path = \"x\", path_prefix = \"y\" }",
    );
    let got = err(&text);
    let keys: Vec<&str> = got.errors().iter().map(|e| e.key()).collect();
    assert_eq!(
        keys,
        [
            "listeners[0].routes[0].match.service",
            "listeners[0].routes[0].match.method",
            "listeners[0].routes[0].match.path",
            "listeners[0].routes[0].match.path_prefix",
        ]
    );
    assert!(got.errors().iter().all(|e| e.line() == 8));
}

/// Errors of different kinds and places come out together, in file order.
#[test]
fn all_errors_are_reported_together() {
    let text = r#"
[server]
drain_timeout = "forever"

[[listeners]]
name = "a"
address = "127.0.0.1:80"
idle_timeout = "1x"

[[listeners.routes]]
cluster = "missing"

[[listeners]]
name = "a"
address = "bad"

[[clusters]]
name = "c"
lb = "ring_hash"
endpoints = ["c:1", { address = "d:2", weight = 0 }]
"#;
    let got = lines(text);
    assert_eq!(
        got,
        [
            "t.toml:3:17: server.drain_timeout: invalid duration \"forever\": expected a non-negative whole number followed by ms, s, m or h",
            "t.toml:8:16: listeners[0].idle_timeout: invalid duration \"1x\": unknown unit \"x\" (use ms, s, m or h)",
            "t.toml:11:11: listeners[0].routes[0].cluster: unknown cluster `missing` (defined clusters: c)",
            "t.toml:14:8: listeners[1].name: duplicate listener name `a` (also listeners[0])",
            "t.toml:15:11: listeners[1].address: invalid address \"bad\": expected IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"",
            "t.toml:19:6: clusters[0].lb: lb = \"ring_hash\" needs hash_key (\"header:NAME\" or \"client_ip\")",
            "t.toml:20:49: clusters[0].endpoints[1].weight: weight must be between 1 and 4294967295",
        ]
    );
    // Display: one line per error.
    assert_eq!(err(text).to_string(), got.join("\n"));
}

/// Serde errors in different sections are collected too, not only the first one.
#[test]
fn shape_errors_in_several_sections_are_reported_together() {
    let text = r#"
[server]
workers = "many"

[[listeners]]
name = "a"
address = "127.0.0.1:80"
colour = "blue"

[[listeners]]
name = "b"
address = "127.0.0.1:81"
[[listeners.routes]]
clutser = "c"

[[clusters]]
name = "c"
endpoints = [5]
"#;
    let e = err(text);
    let got: Vec<(usize, &str)> = e.errors().iter().map(|e| (e.line(), e.key())).collect();
    assert_eq!(
        got,
        [
            (3, "server.workers"),
            (8, "listeners[0].colour"),
            (14, "listeners[1].routes[0].clutser"),
            (18, "clusters[0].endpoints[0]"),
        ]
    );
}

#[test]
fn load_reports_io_errors_with_the_path() {
    let path = std::env::temp_dir().join(format!(
        "rpcgate-config-missing-{}.toml",
        std::process::id()
    ));
    let e = rpcgate_config::load(&path).unwrap_err();
    assert_eq!(e.len(), 1);
    let e = &e.errors()[0];
    assert_eq!(e.file(), path.display().to_string());
    assert_eq!((e.line(), e.col(), e.key()), (0, 0, ""));
    assert!(
        e.to_string().starts_with(&format!(
            "{}: cannot read the configuration: ",
            path.display()
        )),
        "{e}"
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    let text = MINIMAL.replace("name = \"edge\"", "name = \"édgé\" # ünïcode\nbogus = 1");
    let (pos, _) = one(&text);
    assert_eq!(pos, at(4, 1, "listeners[0].bogus"));
    let text = MINIMAL.replace("address = \"127.0.0.1:8080\"", "address = \"é\"");
    let (pos, _) = one(&text);
    assert_eq!(pos, at(4, 11, "listeners[0].address"));
    let text = MINIMAL.replace("[[listeners.routes]]", "[[listeners.routes]]\n\"ключ\" = 1");
    let (pos, msg) = one(&text);
    assert_eq!(pos, at(7, 1, "listeners[0].routes[0].\"ключ\""));
    assert!(msg.contains("unknown field"), "{msg}");
}

#[test]
fn header_names_are_case_insensitive_so_twice_is_an_error() {
    let (pos, msg) = one(&minimal_with(
        "cluster = \"backends\"",
        "request_headers = { \"X-Env\" = \"a\", \"x-env\" = \"b\" }",
    ));
    assert_eq!(
        pos,
        at(8, 36, "listeners[0].routes[0].request_headers.x-env")
    );
    assert_eq!(
        msg,
        "header \"x-env\" is given twice (names are case-insensitive)"
    );
}

#[test]
fn shape_errors_in_several_routes_of_one_listener_are_reported_together() {
    let text = r#"
[[listeners]]
name = "a"
address = "127.0.0.1:80"
bogus = 1

[[listeners.routes]]
cluster = "c"
match.serivce = "x"

[[listeners.routes]]
cluster = "c"
timeout = 5

[[clusters]]
name = "c"
endpoints = ["c:1"]
"#;
    let e = err(text);
    let got: Vec<(usize, &str)> = e.errors().iter().map(|e| (e.line(), e.key())).collect();
    assert_eq!(
        got,
        [
            (5, "listeners[0].bogus"),
            (9, "listeners[0].routes[0].match.serivce"),
            (13, "listeners[0].routes[1].timeout"),
        ]
    );
}

#[test]
fn the_admin_address_cannot_be_a_listeners() {
    let text = format!(
        "[admin]\naddress = \"127.0.0.1:8080\"\n{}",
        common::minimal_with("", "")
    );
    let lines = common::lines(&text);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("t.toml:2:11: admin.address: port 8080 is already taken by listener"),
        "{lines:?}"
    );
    // A wildcard listener takes the port on every address.
    let wildcard = format!(
        "[admin]\naddress = \"127.0.0.1:8080\"\n{}",
        common::MINIMAL.replace("127.0.0.1:8080", "0.0.0.0:8080")
    );
    let lines = common::lines(&wildcard);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("port 8080 is already taken by listener"),
        "{lines:?}"
    );
}

#[test]
fn misspelt_keys_get_a_suggestion_and_schemes_are_explained() {
    let text = common::minimal_with("address = \"127.0.0.1:8080\"", "max_conections = 5");
    let lines = common::lines(&text);
    assert!(
        lines[0].ends_with("did you mean `max_connections`?"),
        "{lines:?}"
    );
    // Nothing close: no guess.
    let text = common::minimal_with("address = \"127.0.0.1:8080\"", "zzz = 5");
    assert!(!common::lines(&text)[0].contains("did you mean"));
    let text = common::MINIMAL.replace("\"127.0.0.1:50051\"", "\"grpc://10.0.0.1:50051\"");
    let lines = common::lines(&text);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("has a scheme: write host:port without `grpc://`")
            && lines[0].contains("protocol"),
        "{lines:?}"
    );
}

/// A value of the wrong type does not hide the next mistake in the same table.
#[test]
fn every_bad_value_of_a_table_is_reported() {
    let text = common::minimal_with(
        "address = \"127.0.0.1:8080\"",
        "max_connections = \"ten\"\nidle_timeout = 5\nbogus = 1",
    );
    let lines = common::lines(&text);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].contains("listeners[0].max_connections: invalid type"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("listeners[0].idle_timeout: invalid type"),
        "{lines:?}"
    );
    assert!(
        lines[2].contains("listeners[0].bogus: unknown field"),
        "{lines:?}"
    );
}

/// Type errors and value errors come in the same round: fixing one never reveals another.
#[test]
fn type_and_value_errors_are_reported_together() {
    let text = r#"[server]
drain_timeout = "5"
[[listeners]]
name = "edge"
address = "127.0.0.1:8080"
[[listeners.routes]]
cluster = "nope"
[[clusters]]
name = "c"
endpoints = ["127.0.0.1:1"]
lb = 5
"#;
    let lines = common::lines(text);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with("t.toml:2:17: server.drain_timeout: invalid duration"),
        "{lines:?}"
    );
    assert!(lines[1].contains("unknown cluster `nope`"), "{lines:?}");
    assert!(
        lines[2].starts_with("t.toml:11:6: clusters[0].lb: invalid type"),
        "{lines:?}"
    );
}

/// `[listeners.tls]` with no `[[listeners]]` before it: one error that says how to write it.
#[test]
fn a_sub_table_before_its_array_is_explained_once() {
    let lines = common::lines(
        "[listeners.tls]\ncert = \"a\"\n[[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n",
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("write `[[listeners]]` (double brackets)"),
        "{lines:?}"
    );
}

#[test]
fn rate_limits_are_checked_at_their_keys() {
    let listener = |value: &str| {
        lines(&minimal_with(
            "address = \"127.0.0.1:8080\"",
            &format!("rate_limit = {value}"),
        ))
    };
    assert_eq!(
        listener("{ requests_per_second = 0 }"),
        [
            "t.toml:5:38: listeners[0].rate_limit.requests_per_second: must be greater than 0 and at most 1000000 (calls per second; 0.5 is one call every 2 s)"
        ]
    );
    assert_eq!(
        listener("{ requests_per_second = 5, burst = 0 }"),
        [
            "t.toml:5:49: listeners[0].rate_limit.burst: must be 1 to 4294967295 (the calls allowed at once)"
        ]
    );
    assert_eq!(
        listener("{ requests_per_second = 5, per = \"ip\" }"),
        [
            "t.toml:5:47: listeners[0].rate_limit.per: unknown scope \"ip\", expected client_ip or listener"
        ]
    );
    let misspelt = listener("{ requests_per_second = 5, bursts = 9 }");
    assert_eq!(misspelt.len(), 1, "{misspelt:?}");
    assert!(misspelt[0].starts_with("t.toml:5:"), "{misspelt:?}");
    assert!(misspelt[0].contains("bursts"), "{misspelt:?}");
    let route = lines(&minimal_with(
        "cluster = \"backends\"",
        "rate_limit = { requests_per_second = -1 }",
    ));
    assert_eq!(route.len(), 1);
    assert!(
        route[0].starts_with("t.toml:8:38: listeners[0].routes[0].rate_limit.requests_per_second:"),
        "{route:?}"
    );
}

#[test]
fn message_size_and_send_timeout_are_checked() {
    let (pos, msg) = one(&minimal_with(
        "cluster = \"backends\"",
        "max_message_bytes = 0",
    ));
    assert_eq!(pos, at(8, 21, "listeners[0].routes[0].max_message_bytes"));
    assert!(msg.contains("between 1 and 4294967295"), "{msg}");
    let (pos, msg) = one(&minimal_with(
        "cluster = \"backends\"",
        "max_message_bytes = 4294967296",
    ));
    assert_eq!(pos.2, "listeners[0].routes[0].max_message_bytes");
    assert!(msg.contains("32 bits"), "{msg}");
    let (pos, msg) = one(&minimal_with(
        "address = \"127.0.0.1:8080\"",
        "send_timeout = \"0s\"",
    ));
    assert_eq!(pos, at(5, 16, "listeners[0].send_timeout"));
    assert!(msg.contains("greater than 0s"), "{msg}");
    let (pos, _) = one(&minimal_with(
        "address = \"127.0.0.1:8080\"",
        "compression = \"yes\"",
    ));
    assert_eq!(pos.2, "listeners[0].compression");
}

#[test]
fn headers_the_protocol_manages_cannot_be_set() {
    for (name, why) in [
        ("content-length", "frames the body"),
        ("transfer-encoding", "frames the body"),
        ("connection", "hop-by-hop"),
        ("grpc-status", "gRPC status"),
        ("content-encoding", "how the body is encoded"),
    ] {
        let (pos, msg) = one(&minimal_with(
            "cluster = \"backends\"",
            &format!("response_headers = {{ \"{name}\" = \"5\" }}"),
        ));
        assert_eq!(
            pos.2,
            format!("listeners[0].routes[0].response_headers.{name}")
        );
        assert!(
            msg.contains("cannot be set here") && msg.contains(why),
            "{name}: {msg}"
        );
    }
    let (_, msg) = one(&minimal_with(
        "cluster = \"backends\"",
        "request_headers = { \"x frame\" = \"1\" }",
    ));
    assert!(msg.contains("letters, digits and -"), "{msg}");
    let warned = common::ok(&minimal_with(
        "cluster = \"backends\"",
        "response_headers = { \"content-type\" = \"text/html\" }",
    ));
    assert_eq!(warned.warnings.len(), 1, "{:?}", warned.warnings);
}
