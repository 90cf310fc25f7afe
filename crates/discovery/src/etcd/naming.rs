//! etcd's gRPC naming format: the value under each key is the JSON of Go's
//! `endpoints.Endpoint` — `{"Addr": "HOST:PORT", "Metadata": …}` — as etcd's
//! `client/v3/naming/endpoints` manager writes it (older writers add `"Op": 0`).
//! rpcgate reads a `weight` from the metadata; other scalar metadata fields become the
//! endpoint's labels.

use rpcgate_balance::{EndpointSpec, Metadata};
use serde::{Deserialize, Serialize};

/// The JSON of one registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamingValue {
    /// `HOST:PORT` of the backend.
    #[serde(rename = "Addr")]
    pub addr: String,
    /// Free-form; rpcgate writes and reads `{"weight": N}`.
    #[serde(rename = "Metadata", default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

impl NamingValue {
    /// The value `rpcgate register` and the registration helper write.
    pub fn new(address: &str, weight: u32) -> Self {
        Self {
            addr: address.to_owned(),
            metadata: Some(serde_json::json!({ "weight": weight.max(1) })),
        }
    }

    /// The JSON text to store.
    pub fn to_json(&self) -> String {
        // A struct of a string and a JSON value always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Reads a value as an endpoint, or says what is wrong with it.
pub fn parse(value: &[u8]) -> Result<EndpointSpec, String> {
    let parsed: NamingValue = serde_json::from_slice(value).map_err(|e| {
        format!("not etcd's naming format {{\"Addr\": \"HOST:PORT\", \"Metadata\": …}}: {e}")
    })?;
    let port = parsed
        .addr
        .rsplit_once(':')
        .and_then(|(host, port)| (!host.is_empty()).then_some(port))
        .and_then(|port| port.parse::<u16>().ok())
        .filter(|port| *port != 0);
    if port.is_none() {
        return Err(format!(
            "Addr {:?} is not HOST:PORT with a port from 1 to 65535",
            parsed.addr
        ));
    }
    let mut weight = 1;
    let mut labels = Metadata::new();
    if let Some(serde_json::Value::Object(fields)) = &parsed.metadata {
        for (name, field) in fields {
            if name == "weight" {
                weight = field
                    .as_u64()
                    .filter(|w| (1..=u64::from(u32::MAX)).contains(w))
                    .and_then(|w| u32::try_from(w).ok())
                    .ok_or_else(|| {
                        format!(
                            "Metadata.weight {field} is not a whole number from 1 to {}",
                            u32::MAX
                        )
                    })?;
                continue;
            }
            let text = match field {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            labels.insert(name.clone(), text);
        }
    }
    Ok(EndpointSpec::new(parsed.addr)
        .with_weight(weight)
        .with_metadata(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_etcd_go_manager_and_rpcgate_write() {
        // Go: endpoints.Endpoint{Addr: "10.0.0.1:50051"} → Metadata null.
        let e = parse(br#"{"Addr":"10.0.0.1:50051","Metadata":null}"#).unwrap();
        assert_eq!((e.address.as_str(), e.weight), ("10.0.0.1:50051", 1));
        // Older naming.Update with Op.
        let e =
            parse(br#"{"Op":0,"Addr":"h:1","Metadata":{"weight":3,"zone":"a","x":[1]}}"#).unwrap();
        assert_eq!(e.weight, 3);
        assert_eq!(e.metadata.get("zone").map(String::as_str), Some("a"));
        assert!(!e.metadata.contains_key("x"));
        let ours = NamingValue::new("[::1]:7", 2).to_json();
        assert_eq!(ours, r#"{"Addr":"[::1]:7","Metadata":{"weight":2}}"#);
        assert_eq!(parse(ours.as_bytes()).unwrap().weight, 2);
    }

    #[test]
    fn refuses_what_is_not_an_endpoint() {
        for (value, says) in [
            (&br#"10.0.0.1:50051"#[..], "not etcd's naming format"),
            (br#"{"addr":"h:1"}"#, "missing field `Addr`"),
            (br#"{"Addr":"10.0.0.1"}"#, "is not HOST:PORT"),
            (br#"{"Addr":"h:0"}"#, "is not HOST:PORT"),
            (
                br#"{"Addr":"h:1","Metadata":{"weight":0}}"#,
                "Metadata.weight 0",
            ),
            (
                br#"{"Addr":"h:1","Metadata":{"weight":"2"}}"#,
                "Metadata.weight \"2\"",
            ),
        ] {
            let why = parse(value).unwrap_err();
            assert!(why.contains(says), "{why}");
        }
    }
}
