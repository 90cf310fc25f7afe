//! Routing: which route (and so which cluster) takes a request.
//!
//! Routes are tried in file order and the first whose every condition holds wins, like
//! NGINX `location` blocks written as exact/prefix matches and like Envoy's route table.
//! gRPC paths are `/package.Service/Method`, so `match.service` and `match.method` are
//! prefix and exact matches on the path with the slashes put in for the user.

use http::HeaderMap;
use rpcgate_config::{Route, RouteMatch};

/// A route's conditions, prepared for matching without allocation.
#[derive(Debug, Clone)]
struct CompiledMatch {
    /// Exact path (`match.path` or `/` + `match.method`).
    exact_paths: Vec<String>,
    /// Path prefixes (`match.path_prefix` or `/` + `match.service` + `/`).
    prefixes: Vec<String>,
    authority: Option<String>,
    headers: Vec<(http::HeaderName, String)>,
    grpc: Option<bool>,
}

impl CompiledMatch {
    fn new(m: &RouteMatch) -> Self {
        let mut exact_paths = Vec::new();
        let mut prefixes = Vec::new();
        if let Some(service) = &m.service {
            prefixes.push(format!("/{}/", service.trim_matches('/')));
        }
        if let Some(method) = &m.method {
            exact_paths.push(format!("/{}", method.trim_start_matches('/')));
        }
        if let Some(path) = &m.path {
            exact_paths.push(path.clone());
        }
        if let Some(prefix) = &m.path_prefix {
            prefixes.push(prefix.clone());
        }
        let headers = m
            .headers
            .iter()
            .filter_map(|(name, value)| {
                http::HeaderName::from_bytes(name.as_bytes())
                    .ok()
                    .map(|name| (name, value.clone()))
            })
            .collect();
        Self {
            exact_paths,
            prefixes,
            authority: m.authority.as_ref().map(|a| a.to_ascii_lowercase()),
            headers,
            grpc: m.grpc,
        }
    }

    fn matches(&self, request: &RequestView<'_>) -> bool {
        self.exact_paths.iter().all(|p| request.path == p)
            && self
                .prefixes
                .iter()
                .all(|p| request.path.starts_with(p.as_str()))
            && self.authority.as_ref().is_none_or(|a| {
                request
                    .authority
                    .is_some_and(|ra| ra.eq_ignore_ascii_case(a))
            })
            && self.grpc.is_none_or(|g| g == request.grpc)
            && self.headers.iter().all(|(name, value)| {
                request
                    .headers
                    .get_all(name)
                    .iter()
                    .any(|v| v.as_bytes() == value.as_bytes())
            })
    }
}

/// What routing looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The request path (no query).
    pub path: &'a str,
    /// `:authority` or `Host`, without the port's removal.
    pub authority: Option<&'a str>,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// Whether this is a gRPC request.
    pub grpc: bool,
}

/// A listener's routes, compiled.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<CompiledMatch>,
}

impl Router {
    /// Compiles the routes of one listener; the returned index is the route's position.
    pub fn new(routes: &[Route]) -> Self {
        Self {
            routes: routes
                .iter()
                .map(|r| CompiledMatch::new(&r.matcher))
                .collect(),
        }
    }

    /// The index of the first route that matches, if any.
    pub fn find(&self, request: &RequestView<'_>) -> Option<usize> {
        self.routes.iter().position(|m| m.matches(request))
    }
}

/// Splits a gRPC path `/pkg.Service/Method` into service and method.
pub fn grpc_service_method(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(m: RouteMatch) -> Route {
        Route {
            name: "r".into(),
            matcher: m,
            cluster: 0,
            timeout: None,
            request_headers: vec![],
            response_headers: vec![],
            retry: None,
            access: rpcgate_config::AccessList::default(),
            rate_limit: None,
            max_message_bytes: rpcgate_config::defaults::MAX_MESSAGE_BYTES,
        }
    }

    fn view<'a>(path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            path,
            authority: Some("api.example.com"),
            headers,
            grpc: true,
        }
    }

    #[test]
    fn first_match_in_file_order_wins() {
        let router = Router::new(&[
            route(RouteMatch {
                service: Some("techschool_pcbook.AuthService".into()),
                ..Default::default()
            }),
            route(RouteMatch {
                method: Some("techschool_pcbook.LaptopService/CreateLaptop".into()),
                ..Default::default()
            }),
            route(RouteMatch {
                path_prefix: Some("/".into()),
                ..Default::default()
            }),
        ]);
        let h = HeaderMap::new();
        assert_eq!(
            router.find(&view("/techschool_pcbook.AuthService/Login", &h)),
            Some(0)
        );
        assert_eq!(
            router.find(&view("/techschool_pcbook.LaptopService/CreateLaptop", &h)),
            Some(1)
        );
        assert_eq!(
            router.find(&view("/techschool_pcbook.LaptopService/SearchLaptop", &h)),
            Some(2)
        );
        // A service name that merely starts the same way is not that service.
        assert_eq!(
            router.find(&view("/techschool_pcbook.AuthServiceX/Login", &h)),
            Some(2)
        );
    }

    #[test]
    fn authority_headers_and_grpc_conditions() {
        let router = Router::new(&[
            route(RouteMatch {
                authority: Some("API.example.com".into()),
                headers: vec![("x-canary".into(), "1".into())],
                ..Default::default()
            }),
            route(RouteMatch {
                grpc: Some(false),
                ..Default::default()
            }),
        ]);
        let mut h = HeaderMap::new();
        assert_eq!(router.find(&view("/a/b", &h)), None);
        h.insert("x-canary", "1".parse().unwrap());
        assert_eq!(router.find(&view("/a/b", &h)), Some(0));
        let empty = HeaderMap::new();
        let rest = RequestView {
            grpc: false,
            ..view("/healthcheck", &empty)
        };
        assert_eq!(router.find(&rest), Some(1));
    }

    #[test]
    fn splits_grpc_paths() {
        assert_eq!(grpc_service_method("/a.B/C"), Some(("a.B", "C")));
        assert_eq!(grpc_service_method("/a.B/"), None);
        assert_eq!(grpc_service_method("/healthcheck"), None);
    }
}
