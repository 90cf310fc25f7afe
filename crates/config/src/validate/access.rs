//! `allow` / `deny` lists (listeners and routes): CIDRs parsed into an [`AccessList`],
//! each bad entry an error at that entry.

use super::Validator;
use crate::file::Spanned;
use crate::locate::KeyPath;
use crate::runtime::{AccessList, Cidr};

/// A list as the file writes it.
type ListFile = Option<Spanned<Vec<Spanned<String>>>>;

impl Validator<'_> {
    /// The access list of a listener or route from its `allow` and `deny` keys under `key`.
    pub(super) fn access_list(
        &mut self,
        allow: &ListFile,
        deny: &ListFile,
        key: &KeyPath,
    ) -> AccessList {
        AccessList {
            allow: self.cidrs(allow, &key.key("allow")),
            deny: self.cidrs(deny, &key.key("deny")),
        }
    }

    fn cidrs(&mut self, list: &ListFile, key: &KeyPath) -> Vec<Cidr> {
        let Some(list) = list else { return Vec::new() };
        let mut out = Vec::new();
        for (i, entry) in list.get_ref().iter().enumerate() {
            match parse_cidr(entry.get_ref()) {
                Ok(cidr) => out.push(cidr),
                Err(why) => self.err(
                    &entry.span(),
                    &key.index(i),
                    format!("invalid network {:?}: {why}", entry.get_ref()),
                ),
            }
        }
        out
    }
}

/// `ADDRESS/PREFIX` or a bare address; the host bits must be zero (`10.0.0.1/8` is
/// probably a typo for `10.0.0.0/8` or `10.0.0.1/32`).
pub(crate) fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let (address, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let network: std::net::IpAddr = address.trim().parse().map_err(|_| {
        "expected an IPv4 or IPv6 address, e.g. \"10.0.0.0/8\" or \"::1\"".to_owned()
    })?;
    let bits = if network.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => bits,
        Some(p) => p
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= bits)
            .ok_or_else(|| format!("the prefix length must be 0 to {bits}"))?,
    };
    let cidr = Cidr { network, prefix };
    if cidr.masked(network) != network {
        return Err(format!(
            "host bits are set: write {}/{prefix}, or the address alone for just that host",
            cidr.masked(network)
        ));
    }
    Ok(cidr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> std::net::IpAddr {
        s.parse().unwrap_or_else(|_| panic!("{s}"))
    }

    #[test]
    fn networks_parse_and_contain() {
        let net = parse_cidr("10.0.0.0/8").unwrap_or_else(|e| panic!("{e}"));
        assert!(net.contains(ip("10.200.3.4")));
        assert!(net.contains(ip("::ffff:10.1.1.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        let one = parse_cidr("::1").unwrap_or_else(|e| panic!("{e}"));
        assert!(one.contains(ip("::1")) && !one.contains(ip("::2")));
        let all = parse_cidr("0.0.0.0/0").unwrap_or_else(|e| panic!("{e}"));
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("::1")));
        assert!(
            parse_cidr("10.0.0.1/8")
                .unwrap_err()
                .contains("write 10.0.0.0/8")
        );
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("localhost").is_err());
        let list = AccessList {
            allow: vec![parse_cidr("127.0.0.0/8").unwrap_or_else(|e| panic!("{e}"))],
            deny: vec![parse_cidr("127.0.0.2").unwrap_or_else(|e| panic!("{e}"))],
        };
        assert!(list.permits(ip("127.0.0.1")));
        assert!(!list.permits(ip("127.0.0.2")));
        assert!(!list.permits(ip("192.0.2.1")));
    }
}
