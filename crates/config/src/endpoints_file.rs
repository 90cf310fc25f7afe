//! The endpoints file of `discovery = { file = "endpoints.json" }`: a JSON array in the
//! form of a cluster's `endpoints` key, `["10.0.0.1:50051", {"address": "10.0.0.2:50051",
//! "weight": 2}]`.
//!
//! Read when the configuration is loaded (so `check` and `run` report a broken file like
//! a broken config) and again by the watcher in `rpcgate-discovery` whenever the file
//! changes. Every error names the file, line and column: serde_json places syntax and type
//! errors, and the addresses are checked while they are read, so a bad one is placed too.

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::runtime::Endpoint;
use crate::validate::check_host_port;

/// Parses an endpoints file's text; `path` is named in the error (`PATH:LINE:COL: …`).
pub fn parse_endpoints_file(text: &str, path: &Path) -> Result<Vec<Endpoint>, String> {
    let list: EndpointList = serde_json::from_str(text).map_err(|e| {
        format!(
            "{}:{}:{}: {}",
            path.display(),
            e.line(),
            e.column().max(1),
            without_position(&e.to_string())
        )
    })?;
    let mut out: Vec<Endpoint> = Vec::with_capacity(list.0.len());
    for endpoint in list.0 {
        if out.iter().any(|o| o.address == endpoint.address) {
            return Err(format!(
                "{}: duplicate endpoint {:?} (raise its weight instead)",
                path.display(),
                endpoint.address
            ));
        }
        out.push(endpoint);
    }
    Ok(out)
}

/// serde_json's message without its own " at line L column C" (the caller puts the
/// position first, as every rpcgate error does).
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The array, each element checked as it is read.
struct EndpointList(Vec<Endpoint>);

impl<'de> de::Deserialize<'de> for EndpointList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = EndpointList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an array of endpoints, e.g. [\"10.0.0.1:50051\", {\"address\": \"10.0.0.2:50051\", \"weight\": 2}]",
                )
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(endpoint) = seq.next_element::<OneEndpoint>()? {
                    out.push(endpoint.0);
                }
                Ok(EndpointList(out))
            }
        }
        deserializer.deserialize_seq(ListVisitor)
    }
}

/// One element: `"host:port"` or `{"address": "host:port", "weight": N}`.
struct OneEndpoint(Endpoint);

impl<'de> de::Deserialize<'de> for OneEndpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EndpointVisitor;
        impl<'de> Visitor<'de> for EndpointVisitor {
            type Value = OneEndpoint;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"host:port\" or {\"address\": \"host:port\", \"weight\": N}")
            }
            fn visit_str<E: de::Error>(self, address: &str) -> Result<Self::Value, E> {
                endpoint(address, crate::defaults::WEIGHT).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut address: Option<String> = None;
                let mut weight = crate::defaults::WEIGHT;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "address" => address = Some(map.next_value()?),
                        "weight" => {
                            let w: i64 = map.next_value()?;
                            weight =
                                u32::try_from(w).ok().filter(|w| *w >= 1).ok_or_else(|| {
                                    de::Error::custom(format!(
                                        "weight must be between 1 and {}",
                                        u32::MAX
                                    ))
                                })?;
                        }
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown key {other:?}, expected \"address\" or \"weight\""
                            )));
                        }
                    }
                }
                let address = address.ok_or_else(|| de::Error::missing_field("address"))?;
                endpoint(&address, weight).map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_any(EndpointVisitor)
    }
}

/// A checked endpoint.
fn endpoint(address: &str, weight: u32) -> Result<OneEndpoint, String> {
    if let Some((scheme, _)) = address.split_once("://") {
        return Err(format!(
            "endpoint {address:?} has a scheme: write host:port without `{scheme}://`"
        ));
    }
    check_host_port(address)
        .map_err(|why| format!("invalid endpoint address {address:?}: {why}"))?;
    Ok(OneEndpoint(Endpoint {
        address: address.to_owned(),
        weight,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Endpoint>, String> {
        parse_endpoints_file(text, Path::new("eps.json"))
    }

    #[test]
    fn both_forms_are_read() {
        let got = parse("[\"127.0.0.1:1\", {\"address\": \"[::1]:2\", \"weight\": 3}]")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            got,
            [
                Endpoint {
                    address: "127.0.0.1:1".into(),
                    weight: 1
                },
                Endpoint {
                    address: "[::1]:2".into(),
                    weight: 3
                }
            ]
        );
        assert_eq!(parse("[]").map(|v| v.len()), Ok(0));
    }

    #[test]
    fn errors_name_the_file_line_and_column() {
        let bad = parse("[\n  \"127.0.0.1:1\",\n  \"nope\"\n]").unwrap_err();
        assert!(bad.starts_with("eps.json:3:"), "{bad}");
        assert!(bad.contains("invalid endpoint address \"nope\""), "{bad}");
        let syntax = parse("[\"127.0.0.1:1\",,]").unwrap_err();
        assert!(syntax.starts_with("eps.json:1:"), "{syntax}");
        let weight = parse("[{\"address\": \"127.0.0.1:1\", \"weight\": 0}]").unwrap_err();
        assert!(weight.contains("weight must be between 1"), "{weight}");
        let key = parse("[{\"adress\": \"127.0.0.1:1\"}]").unwrap_err();
        assert!(key.contains("unknown key \"adress\""), "{key}");
        let dup = parse("[\"127.0.0.1:1\", \"127.0.0.1:1\"]").unwrap_err();
        assert!(dup.contains("duplicate endpoint"), "{dup}");
        let scheme = parse("[\"http://127.0.0.1:1\"]").unwrap_err();
        assert!(scheme.contains("has a scheme"), "{scheme}");
        let object = parse("{}").unwrap_err();
        assert!(object.contains("an array of endpoints"), "{object}");
    }
}
