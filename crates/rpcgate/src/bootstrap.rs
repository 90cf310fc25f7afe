//! `rpcgate bootstrap`: the gRPC xDS bootstrap (gRFC A27) for proxyless clients pointing
//! at an rpcgate's admin address (contract §9). Clients read it from the file named by
//! `GRPC_XDS_BOOTSTRAP` (or the JSON itself in `GRPC_XDS_BOOTSTRAP_CONFIG`) and dial
//! `xds:///NAME`, NAME being an rpcgate listener or cluster.

use std::process::ExitCode;

use crate::cli::BootstrapArgs;

/// The bootstrap JSON for `admin` and node `node`.
pub fn bootstrap(admin: &str, node: &str) -> serde_json::Value {
    serde_json::json!({
        "xds_servers": [{
            "server_uri": admin,
            "channel_creds": [{ "type": "insecure" }],
            "server_features": ["xds_v3"],
        }],
        "node": {
            "id": node,
            "cluster": "rpcgate-proxyless",
            "locality": {},
        },
    })
}

/// Prints the bootstrap.
pub fn main(args: BootstrapArgs) -> ExitCode {
    let text =
        serde_json::to_string_pretty(&bootstrap(&args.admin, &args.node)).unwrap_or_default();
    println!("{text}");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_admin_address_and_the_node() {
        let json = bootstrap("127.0.0.1:9901", "n1");
        assert_eq!(json["xds_servers"][0]["server_uri"], "127.0.0.1:9901");
        assert_eq!(
            json["xds_servers"][0]["channel_creds"][0]["type"],
            "insecure"
        );
        assert_eq!(json["node"]["id"], "n1");
    }
}
